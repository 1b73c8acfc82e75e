#!/usr/bin/env python3
"""PyTorch (eager, cuDNN) on the same GPU, the other side of bench_gpu:
a LeNet-5 training step (batch 64, SGD momentum), conv2d forward + backward of the 64->64 3x3 32x32
and 128->128 3x3 16x16 layers (batch 64, fp32), and the L1 open convolution -|x - w| (64->64 3x3
on 32x32) built the usual way, unfold + broadcast + sum, at the largest batch that fits.
Median ms of 50 runs after 10 warm-ups (torch.cuda.synchronize() after each), peak bytes from
torch.cuda.max_memory_allocated(). Prints "key ms peak_MiB" lines, like bench_gpu.
Usage: python3 bench/gpu/torch_gpu.py [cuda:N]"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
torch.backends.cudnn.benchmark = True


def median_ms(f, reps=50):
    for _ in range(10):
        f()
    torch.cuda.synchronize(dev)
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize(dev)
        t.append((time.perf_counter() - t0) * 1e3)
    t.sort()
    return t[len(t) // 2]


def peak_mib():
    return torch.cuda.max_memory_allocated(dev) / 2**20


def report(key, ms):
    print(f"{key} {ms:.4f} {peak_mib():.1f}", flush=True)


torch.manual_seed(0)
lenet = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                      nn.Linear(84, 10)).to(dev)
opt = torch.optim.SGD(lenet.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(64, 1, 28, 28, device=dev)
y = torch.randint(0, 10, (64,), device=dev)


def lenet_step():
    opt.zero_grad()
    F.cross_entropy(lenet(x), y).backward()
    opt.step()


torch.cuda.reset_peak_memory_stats(dev)
report("lenet_step", median_ms(lenet_step))

for key, c, s in (("conv64", 64, 32), ("conv128", 128, 16)):
    x = torch.randn(64, c, s, s, device=dev, requires_grad=True)
    w = (torch.randn(c, c, 3, 3, device=dev) * 0.05).requires_grad_()
    b = torch.zeros(c, device=dev, requires_grad=True)
    gy = torch.randn(64, c, s, s, device=dev)

    def step():
        x.grad = w.grad = b.grad = None
        F.conv2d(x, w, b, padding=1).backward(gy)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    report(key, median_ms(step))


def l1_unfold(x, w):
    # out[n, o, p] = -sum_k |cols[n, k, p] - w[o, k]|: the (N, Cout, K, L) broadcast is built
    n = x.shape[0]
    cols = F.unfold(x, 3, padding=1)                          # (N, K, L)
    d = cols.unsqueeze(1) - w.view(1, w.shape[0], -1, 1)      # (N, Cout, K, L)
    return -d.abs().sum(2).view(n, w.shape[0], x.shape[2], x.shape[3])


batch = 64
while batch >= 1:
    x = w = gy = None
    try:
        x = torch.randn(batch, 64, 32, 32, device=dev, requires_grad=True)
        w = (torch.randn(64, 64, 3, 3, device=dev) * 0.05).requires_grad_()
        gy = torch.randn(batch, 64, 32, 32, device=dev)

        def l1_step():
            x.grad = w.grad = None
            l1_unfold(x, w).backward(gy)

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        report(f"l1_unfold_b{batch}", median_ms(l1_step, reps=10))
        break
    except torch.cuda.OutOfMemoryError:
        x = w = gy = None
        torch.cuda.empty_cache()
        batch //= 2

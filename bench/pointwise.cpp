// The memory-bound kernels of a training step, timed through the public ops at every CPU ISA level
// this CPU has: reductions (sum, per-channel sum), batch norm forward and backward, elementwise
// arithmetic, exp/tanh/sigmoid/gelu, log_softmax, 2x2 max pooling and the SGD and Adam steps.
// The sizes are those of the CIFAR CNN's 32x32 layers at batch 64 (2M floats, 8 MB: past L2, in
// L3 on most CPUs) and of a small tensor that stays in L2.
// Usage: bench_pointwise [threads] [--level=generic|avx2|avx512] [--only=text]   (prints a markdown
// table; --only keeps the ops whose name contains text)
#include <minigrad/minigrad.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "timing.h"

using namespace minigrad;

namespace {

struct Case {
  std::string name;
  double bytes;  // bytes read + written once, for the GB/s column
  std::function<void()> run;
};

std::vector<Case> cases(int64_t N, int64_t C, int64_t S) {
  const int64_t n = N * C * S * S;
  const double fb = double(n) * 4;
  std::vector<Case> cs;
  auto x = std::make_shared<Tensor>(randn({N, C, S, S}));
  auto y = std::make_shared<Tensor>(randn({N, C, S, S}));
  cs.push_back({"sum(x)", fb, [x] { (void)sum(*x).item<float>(); }});
  cs.push_back({"sum(x, {0, 2, 3}) (per channel)", fb, [x] { (void)sum(*x, {0, 2, 3}); }});
  cs.push_back({"add(x, y)", 3 * fb, [x, y] { (void)add(*x, *y); }});
  cs.push_back({"add(x, y, 0.5)", 3 * fb, [x, y] { (void)add(*x, *y, 0.5); }});
  cs.push_back({"mul(x, 0.5)", 2 * fb, [x] { (void)mul(*x, 0.5); }});
  cs.push_back({"div(x, y)", 3 * fb, [x, y] { (void)div(*x, *y); }});
  auto g = std::make_shared<Tensor>(randn({N, C, S, S}));
  auto xn = std::make_shared<Tensor>(randn({N, C, S, S}).requires_grad_());
  auto gamma = std::make_shared<Tensor>(ones({C}).requires_grad_());
  auto beta = std::make_shared<Tensor>(zeros({C}).requires_grad_());
  auto rm = std::make_shared<Tensor>(zeros({C}));
  auto rv = std::make_shared<Tensor>(ones({C}));
  cs.push_back({"batch_norm forward (training)", 3 * fb, [=] {
                  NoGradGuard ng;
                  (void)batch_norm(*xn, *rm, *rv, *gamma, *beta, true);
                }});
  cs.push_back({"batch_norm forward + backward", 8 * fb, [=] {
                  Tensor out = batch_norm(*xn, *rm, *rv, *gamma, *beta, true);
                  out.backward(*g);
                  xn->zero_grad();
                  gamma->zero_grad();
                  beta->zero_grad();
                }});
  cs.push_back({"exp(x)", 2 * fb, [x] { (void)exp(*x); }});
  cs.push_back({"tanh(x)", 2 * fb, [x] { (void)tanh(*x); }});
  cs.push_back({"sigmoid(x)", 2 * fb, [x] { (void)sigmoid(*x); }});
  auto xr = std::make_shared<Tensor>(randn({N * C, S * S}).requires_grad_());
  auto gr = std::make_shared<Tensor>(randn({N * C, S * S}));
  cs.push_back({"log_softmax rows forward + backward", 5 * fb, [=] {
                  log_softmax(*xr, 1).backward(*gr);
                  xr->zero_grad();
                }});
  auto xg = std::make_shared<Tensor>(randn({N, C, S, S}).requires_grad_());
  auto gg = std::make_shared<Tensor>(randn({N, C, S, S}));
  cs.push_back({"gelu forward + backward", 5 * fb, [=] {
                  gelu(*xg).backward(*gg);
                  xg->zero_grad();
                }});
  auto xp = std::make_shared<Tensor>(relu(randn({N, C, S, S})).requires_grad_());
  auto gp = std::make_shared<Tensor>(randn({N, C, S / 2, S / 2}));
  cs.push_back({"max_pool2d 2x2 forward", 1.25 * fb, [=] {
                  NoGradGuard ng;
                  (void)max_pool2d(*xp, {.kernel_size = 2});
                }});
  cs.push_back({"max_pool2d 2x2 forward + backward", 2.5 * fb, [=] {
                  max_pool2d(*xp, {.kernel_size = 2}).backward(*gp);
                  xp->zero_grad();
                }});
  const int64_t P = n / 2;  // parameters: half the activation count
  auto p1 = std::make_shared<Tensor>(randn({P}).requires_grad_());
  p1->set_grad(randn({P}));
  auto sgd = std::make_shared<optim::SGD>(std::vector<Tensor>{*p1}, optim::SGDOptions{.lr = 1e-3, .momentum = 0.9});
  cs.push_back({"SGD momentum step", double(P) * 4 * 4, [sgd] { sgd->step(); }});
  auto p2 = std::make_shared<Tensor>(randn({P}).requires_grad_());
  p2->set_grad(randn({P}));
  auto adam = std::make_shared<optim::Adam>(std::vector<Tensor>{*p2}, optim::AdamOptions{.lr = 1e-4});
  cs.push_back({"Adam step", double(P) * 4 * 7, [adam] { adam->step(); }});
  return cs;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  std::string only, filter;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--level=", 8) == 0) only = argv[i] + 8;
    else if (std::strncmp(argv[i], "--only=", 7) == 0) filter = argv[i] + 7;
    else threads = std::atoi(argv[i]);
  }
  if (threads < 1) {
    std::fprintf(stderr, "usage: bench_pointwise [threads] [--level=generic|avx2|avx512] [--only=text]\n");
    return 2;
  }
  set_num_threads(threads);
  manual_seed(0);
  std::vector<CpuIsa> levels;
  for (CpuIsa l : cpu_isa_levels())
    if (only.empty() || only == cpu_isa_name(l)) levels.push_back(l);
  std::printf("CPU: %s; %d threads\n\n", cpu_model_name().c_str(), threads);
  std::printf("| op | size | level | ms | GB/s |\n|---|---|---|---|---|\n");
  struct Size {
    const char* label;
    int64_t N, C, S;
  };
  for (Size sz : {Size{"64x32x32x32 (8 MB)", 64, 32, 32}, Size{"8x16x16x16 (128 KB)", 8, 16, 16}}) {
    std::vector<Case> cs = cases(sz.N, sz.C, sz.S);
    for (const Case& c : cs)
      for (CpuIsa l : levels) {
        if (c.name.find(filter) == std::string::npos) continue;
        set_cpu_isa(l);
        const int reps = sz.N * sz.C * sz.S * sz.S > 100000 ? 41 : 401;
        const double t = median_seconds(c.run, reps, 5);
        std::printf("| %s | %s | %s | %.4f | %.1f |\n", c.name.c_str(), sz.label, cpu_isa_name(l), t * 1e3,
                    c.bytes / t * 1e-9);
      }
  }
  return 0;
}

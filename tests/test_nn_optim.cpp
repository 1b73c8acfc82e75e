// nn::Module and layers; optimizers, schedulers, clipping; a tiny CNN whose loss falls.
#include <cmath>
#include <sstream>

#include "helpers.h"

using namespace mgtest;

TEST_CASE("Linear: forward against a naive product, gradients, PyTorch's init bounds") {
  manual_seed(1);
  nn::Linear lin(5, 3);
  CHECK(lin.weight.sizes() == Shape{3, 5});
  auto wv = vals(lin.weight), bv = vals(lin.bias);
  const double bound = 1 / std::sqrt(5.0);
  for (double v : wv) CHECK(std::abs(v) <= bound);
  for (double v : bv) CHECK(std::abs(v) <= bound);
  Tensor x = randn({4, 5});
  auto xv = vals(x);
  std::vector<double> want;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 3; ++o) {
      double s = bv[size_t(o)];
      for (int64_t k = 0; k < 5; ++k) s += xv[size_t(i * 5 + k)] * wv[size_t(o * 5 + k)];
      want.push_back(s);
    }
  check_close(vals(lin(x)), want, 1e-5);
  lin.to(kFloat64);
  Tensor xd = leaf({4, 5}, Device::cpu());
  CHECK_GRAD([&](const std::vector<Tensor>&) { return lin(xd); }, lin.weight, lin.bias);
  CHECK_GRAD([&](const std::vector<Tensor>& in) { return lin(in[0]); }, xd);
  CHECK_ERROR(lin(ones({4, 6}, kFloat64)), "Linear", "[4, 6]", "in_features=5");
  CHECK_ERROR(nn::Linear(0, 3), "Linear", "in_features");
}

TEST_CASE("Module: registration, names, counts, train/eval, to(), printing") {
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(1, 4, 3, Conv2dOptions{.padding = 1}), std::make_shared<nn::BatchNorm2d>(4),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
      std::make_shared<nn::Flatten>(), std::make_shared<nn::Dropout>(0.2), std::make_shared<nn::Linear>(4 * 4 * 4, 10));
  std::vector<std::string> names;
  for (auto& [n, t] : net->named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"});
  CHECK(net->named_buffers().size() == 3);
  CHECK(net->parameter_count() == 4 * 9 + 4 + 4 + 4 + 64 * 10 + 10);
  Tensor y = (*net)(randn({2, 1, 8, 8}));
  CHECK(y.sizes() == Shape{2, 10});
  net->eval();
  CHECK_FALSE((*net)[5]->is_training());
  net->train();
  CHECK((*net)[5]->is_training());
  Tensor w = net->parameters()[0];
  net->to(kFloat64);
  CHECK(w.dtype() == kFloat64);  // the handle held outside sees the move
  CHECK(net->buffers()[0].dtype() == kFloat64);
  std::ostringstream os;
  os << *net;
  CHECK(os.str().find("(0): Conv2d(1, 4, kernel_size=(3, 3)") != std::string::npos);
  CHECK(os.str().find("[" + std::to_string(net->parameter_count()) + " params]") != std::string::npos);
  sum((*net)(randn({2, 1, 8, 8}, kFloat64))).backward();
  CHECK(w.grad().defined());
  net->zero_grad();
  CHECK_FALSE(w.grad().defined());
  CHECK_ERROR((*net)[9], "Sequential", "index 9");
  CHECK_ERROR(nn::Module("Bare").forward(ones({1})), "Bare", "forward");
}

TEST_CASE("Conv2d, ConvTranspose2d and BatchNorm2d layers match their functional ops") {
  manual_seed(2);
  nn::Conv2d conv(2, 4, {3, 2}, {.stride = 2, .padding = 1, .groups = 2});
  Tensor x = randn({2, 2, 7, 6});
  check_close(vals(conv(x)), vals(conv2d(x, conv.weight, conv.bias, {.stride = 2, .padding = 1, .groups = 2})), 1e-6);
  const double bound = 1 / std::sqrt(1.0 * 3 * 2);
  for (double v : vals(conv.weight)) CHECK(std::abs(v) <= bound);
  nn::ConvTranspose2d up(4, 2, 2, {.stride = 2});
  CHECK(up(conv(x)).sizes() == Shape{2, 2, 8, 8});
  nn::BatchNorm2d bn(4);
  Tensor h = conv(x).detach();
  Tensor yt = bn(h);
  CHECK(bn.num_batches_tracked.item() == 1);
  check_close(vals(mean(yt, {0, 2, 3})), {0, 0, 0, 0}, 1e-5);
  bn.eval();
  check_close(vals(bn(h)), vals(batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, false)), 1e-6);
  CHECK_ERROR(bn(ones({2, 4})), "BatchNorm2d", "(N, C, H, W)");
  CHECK_ERROR(nn::Conv2d(3, 4, 3, {.groups = 2}), "Conv2d", "groups=2");
}

TEST_CASE("nn::init: fans, gains and distributions") {
  Tensor w = empty({64, 32, 3, 3});
  auto [fi, fo] = nn::init::calculate_fan_in_and_fan_out(w);
  CHECK(fi == 32 * 9);
  CHECK(fo == 64 * 9);
  nn::init::kaiming_uniform_(w, 0.0, nn::init::FanMode::FanIn, nn::init::Nonlinearity::ReLU);
  const double bound = std::sqrt(2.0) * std::sqrt(3.0 / (32 * 9));
  CHECK(max(abs(w)).item() <= bound);
  CHECK(max(abs(w)).item() > 0.9 * bound);
  nn::init::kaiming_normal_(w, 0.0, nn::init::FanMode::FanOut, nn::init::Nonlinearity::ReLU);
  CHECK(std::sqrt(var(w).item()) == doctest::Approx(std::sqrt(2.0 / (64 * 9))).epsilon(0.05));
  nn::init::xavier_uniform_(w);
  CHECK(max(abs(w)).item() <= std::sqrt(6.0 / (fi + fo)));
  nn::init::xavier_normal_(w, 2.0);
  CHECK(std::sqrt(var(w).item()) == doctest::Approx(2.0 * std::sqrt(2.0 / (fi + fo))).epsilon(0.05));
  nn::init::constant_(w, 0.5);
  CHECK(min(w).item() == 0.5);
  CHECK_ERROR(nn::init::xavier_uniform_(empty({3})), "init", "at least 2 dims");
}

TEST_CASE("SGD with momentum, nesterov and weight decay follows the PyTorch update") {
  for (bool nesterov : {false, true}) {
    Tensor p = from_vector<double>({1.0, -2.0}).requires_grad_();
    optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = nesterov});
    double pv[2] = {1.0, -2.0}, buf[2] = {0, 0};
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      sum(mul(mul(p, p), 1.5)).backward();  // grad = 3p
      opt.step();
      for (int i = 0; i < 2; ++i) {
        double g = 3 * pv[i] + 0.01 * pv[i];
        buf[i] = step == 0 ? g : 0.9 * buf[i] + g;
        double d = nesterov ? g + 0.9 * buf[i] : buf[i];
        pv[i] -= 0.1 * d;
      }
    }
    check_close(vals(p), {pv[0], pv[1]}, 1e-12);
  }
  // dampening, no momentum buffer without momentum, float32, and every device
  for_each_device([&](Device dev) {
    for (double momentum : {0.0, 0.5}) {
      Tensor p = from_vector<float>({0.5f, -1.5f, 2.0f}).to(dev).requires_grad_();
      optim::SGD opt({p}, {.lr = 0.2, .momentum = momentum, .dampening = momentum > 0 ? 0.25 : 0.0});
      double pv[3] = {0.5, -1.5, 2.0}, buf[3] = {0, 0, 0};
      for (int step = 0; step < 3; ++step) {
        opt.zero_grad();
        sum(mul(p, p)).backward();  // grad = 2p
        opt.step();
        for (int i = 0; i < 3; ++i) {
          const double g = 2 * pv[i];
          buf[i] = step == 0 ? g : momentum * buf[i] + 0.75 * g;
          pv[i] -= 0.2 * (momentum > 0 ? buf[i] : g);
        }
      }
      check_close(vals(p), {pv[0], pv[1], pv[2]}, 1e-5);
      CHECK((opt.state_dict().size() == 1) == (momentum == 0));  // only "lr" without momentum
    }
  });
  // a strided parameter (a transposed leaf) is updated in place like any other
  Tensor pt = from_vector<double>({1, 2, 3, 4, 5, 6}).view({2, 3}).t().detach().requires_grad_();
  CHECK_FALSE(pt.is_contiguous());
  optim::SGD opt_t({pt}, {.lr = 0.5});
  sum(mul(pt, pt)).backward();
  opt_t.step();
  check_close(vals(pt), {0, 0, 0, 0, 0, 0});  // p - 0.5 * 2p
  // a step between forward and backward changes a saved parameter: backward refuses
  Tensor w = from_vector<double>({1.0, 2.0}).requires_grad_();
  optim::SGD opt_w({w}, {.lr = 0.1});
  Tensor y = sum(mul(w, w));
  sum(mul(w, w)).backward();
  opt_w.step();
  CHECK_ERROR(y.backward(), "mul");
  Tensor q = ones({2}, requires_grad());
  CHECK_ERROR(optim::SGD({q}, {.lr = -1}), "SGD", "learning rate");
  CHECK_ERROR(optim::SGD({q}, {.nesterov = true}), "SGD", "nesterov");
  CHECK_ERROR(optim::SGD({ones({2})}, {}), "SGD", "requires grad");
}

TEST_CASE("Adam and AdamW follow the reference update; state_dict resumes exactly") {
  for (bool decoupled : {false, true}) {
    Tensor p = from_vector<double>({0.5, -1.5, 2.0}).requires_grad_();
    std::unique_ptr<optim::Optimizer> opt;
    if (decoupled) {
      auto w = std::make_unique<optim::AdamW>(std::vector<Tensor>{p}, optim::AdamWOptions{.lr = 0.05});
      CHECK(w->options.weight_decay == 0.01);  // AdamW's default, kept under designated initialisers
      opt = std::move(w);
    } else {
      opt = std::make_unique<optim::Adam>(std::vector<Tensor>{p}, optim::AdamOptions{.lr = 0.05, .weight_decay = 0.1});
    }
    std::vector<double> pv{0.5, -1.5, 2.0}, m(3, 0), v(3, 0);
    for (int t = 1; t <= 4; ++t) {
      opt->zero_grad();
      sum(pow(p, 3.0)).backward();  // grad = 3p^2
      opt->step();
      for (size_t i = 0; i < 3; ++i) {
        double g = 3 * pv[i] * pv[i];
        if (decoupled) pv[i] *= 1 - 0.05 * 0.01;
        else g += 0.1 * pv[i];
        m[i] = 0.9 * m[i] + 0.1 * g;
        v[i] = 0.999 * v[i] + 0.001 * g * g;
        double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t);
        pv[i] -= 0.05 / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
      }
    }
    check_close(vals(p), pv, 1e-10);
  }
  // Resuming from a state_dict continues exactly as an uninterrupted run.
  auto run = [](int steps_before, bool reload) {
    Tensor p = from_vector<double>({0.3, -0.7}).requires_grad_();
    optim::Adam opt({p}, {.lr = 0.1});
    auto one = [&](optim::Optimizer& o) { o.zero_grad(); sum(mul(p, p)).backward(); o.step(); };
    for (int i = 0; i < steps_before; ++i) one(opt);
    if (reload) {
      optim::StateDict s;
      for (auto& [k, t] : opt.state_dict()) s.emplace_back(k, t.clone());
      optim::Adam fresh({p}, {.lr = 0.1});
      fresh.load_state_dict(s);
      for (int i = 0; i < 3; ++i) one(fresh);
    } else {
      for (int i = 0; i < 3; ++i) one(opt);
    }
    return vals(p);
  };
  check_close(run(2, true), run(2, false), 1e-14);
  Tensor p = ones({2}, requires_grad());
  optim::Adam a({p}, {});
  CHECK_ERROR(a.load_state_dict({{"lr", scalar_tensor(0.1)}}), "Adam", "step");
  optim::StateDict bad = a.state_dict();
  bad[2].second = zeros({3});
  CHECK_ERROR(a.load_state_dict(bad), "Adam", "exp_avg.0", "[3]", "[2]");
}

TEST_CASE("LambdaLR, MultiStepLR, ExponentialLR, LinearLR and get_last_lr: PyTorch's rates per epoch") {
  Tensor p = ones({2}, requires_grad());
  auto rates = [](optim::LRScheduler& s, optim::Optimizer& o, int epochs) {
    std::vector<double> r{o.lr()};  // epoch 0, after construction
    for (int e = 0; e < epochs; ++e) {
      s.step();
      r.push_back(o.lr());
      CHECK(s.get_last_lr() == std::vector<double>{o.lr()});
    }
    return r;
  };
  {  // applied at construction: lr = 0.5 * 0.9^epoch from epoch 0
    optim::SGD o({p}, {.lr = 0.5});
    optim::LambdaLR s(o, [](int64_t e) { return std::pow(0.9, double(e)); });
    check_close(rates(s, o, 3), {0.5, 0.45, 0.405, 0.3645});
    CHECK_ERROR(optim::LambdaLR(o, nullptr), "LambdaLR", "empty");
    CHECK_ERROR(optim::LambdaLR(o, [](int64_t) { return std::nan(""); }), "LambdaLR", "lr_lambda(0)", "nan");
  }
  {  // milestones in any order; one given twice counts twice
    optim::SGD o({p}, {.lr = 1.0});
    optim::MultiStepLR s(o, {3, 1}, 0.1);
    check_close(rates(s, o, 5), {1.0, 0.1, 0.1, 0.01, 0.01, 0.01});
    optim::SGD o2({p}, {.lr = 1.0});
    optim::MultiStepLR s2(o2, {2, 2}, 0.5);
    check_close(rates(s2, o2, 3), {1.0, 1.0, 0.25, 0.25});
    CHECK_ERROR(optim::MultiStepLR(o, {2, -1}), "MultiStepLR", "milestones", "[2, -1]");
    CHECK_ERROR(optim::MultiStepLR(o, {2}, -0.5), "MultiStepLR", "gamma", "-0.5");
  }
  {
    optim::SGD o({p}, {.lr = 1.0});
    optim::ExponentialLR s(o, 0.5);
    check_close(rates(s, o, 3), {1.0, 0.5, 0.25, 0.125});
    CHECK_ERROR(optim::ExponentialLR(o, 0.0), "ExponentialLR", "gamma", "0");
  }
  {  // warm-up from a quarter of 0.4 over 3 epochs, then flat; resuming at epoch 2 gives epoch 2's rate
    optim::SGD o({p}, {.lr = 0.4});
    optim::LinearLR s(o, {.start_factor = 0.25, .end_factor = 1.0, .total_iters = 3});
    check_close(rates(s, o, 4), {0.1, 0.2, 0.3, 0.4, 0.4});
    optim::SGD o2({p}, {.lr = 0.4});
    optim::LinearLR s2(o2, {.start_factor = 0.25, .total_iters = 3});
    s2.set_last_epoch(2);
    CHECK(o2.lr() == doctest::Approx(0.3));
    CHECK(s2.last_epoch() == 2);
    optim::SGD o3({p}, {.lr = 0.3});
    optim::LinearLR s3(o3);  // PyTorch's defaults: a third of the rate, linear over 5 epochs
    CHECK(o3.lr() == doctest::Approx(0.1));
    CHECK_ERROR(optim::LinearLR(o, {.start_factor = 0}), "LinearLR", "start_factor", "(0, 1]");
    CHECK_ERROR(optim::LinearLR(o, {.end_factor = 2}), "LinearLR", "end_factor", "2");
    CHECK_ERROR(optim::LinearLR(o, {.total_iters = 0}), "LinearLR", "total_iters", "0");
  }
}

TEST_CASE("clip_grad_value_ clamps every gradient element in place, NaN stays") {
  for_each_device([](Device dev) {
    for (DType dt : {kFloat32, kFloat64}) {
      Tensor a = zeros({4}, TensorOptions(dt).device(dev)).requires_grad_();
      Tensor b = zeros({2, 1}, TensorOptions(dt).device(dev)).requires_grad_(), c = zeros({3}, requires_grad());
      const double nan = std::nan("");
      a.set_grad(from_vector<double>({-3.0, 0.5, 2.0, nan}, {4}).to(dt).to(dev));
      b.set_grad(from_vector<double>({1.0, -1.0}, {2, 1}).to(dt).to(dev));
      optim::clip_grad_value_({a, b, c}, 1.0);  // c has no gradient: left alone
      const auto g = vals(a.grad());
      CHECK(g[0] == -1.0);
      CHECK(g[1] == 0.5);
      CHECK(g[2] == 1.0);
      CHECK(std::isnan(g[3]));
      CHECK(vals(b.grad()) == std::vector<double>{1.0, -1.0});
      CHECK(a.grad().dtype() == dt);
      CHECK(!c.grad().defined());
    }
  });
  Tensor a = zeros({1}, requires_grad());
  CHECK_ERROR(optim::clip_grad_value_({a}, -1.0), "clip_grad_value_", "clip_value", "-1");
}

TEST_CASE("StepLR, CosineAnnealingLR and clip_grad_norm_") {
  Tensor p = ones({2}, requires_grad());
  optim::SGD opt({p}, {.lr = 1.0});
  optim::StepLR s(opt, 2, 0.5);
  std::vector<double> lrs;
  for (int e = 0; e < 5; ++e) {
    s.step();
    lrs.push_back(opt.lr());
  }
  check_close(lrs, {1.0, 0.5, 0.5, 0.25, 0.25});
  optim::SGD opt2({p}, {.lr = 1.0});
  optim::CosineAnnealingLR c(opt2, 4, 0.1);
  c.step();
  CHECK(opt2.lr() == doctest::Approx(0.1 + 0.9 * (1 + std::cos(M_PI / 4)) / 2));
  c.set_last_epoch(4);
  CHECK(opt2.lr() == doctest::Approx(0.1));
  CHECK_ERROR(optim::StepLR(opt, 0), "StepLR", "step_size");
  Tensor a = ones({3}, requires_grad()), b = ones({4}, requires_grad());
  sum(mul(a, 3.0)).backward();
  sum(mul(b, 4.0)).backward();
  double n = optim::clip_grad_norm_({a, b}, 1.0);
  CHECK(n == doctest::Approx(std::sqrt(3 * 9.0 + 4 * 16.0)));
  double after = std::sqrt(sum(mul(a.grad(), a.grad())).item() + sum(mul(b.grad(), b.grad())).item());
  CHECK(after == doctest::Approx(1.0).epsilon(1e-5));
  CHECK_ERROR(optim::clip_grad_norm_({a}, 0), "clip_grad_norm_", "max_norm");
}

TEST_CASE("a tiny CNN trained for a few steps sees its loss fall") {
  manual_seed(7);
  // Two classes: a bright square in the top-left or bottom-right corner of a noisy 8x8 image.
  Tensor x = mul(randn({32, 1, 8, 8}), 0.1);
  std::vector<int64_t> labels;
  {
    NoGradGuard ng;
    for (int64_t i = 0; i < 32; ++i) {
      int64_t c = i % 2;
      labels.push_back(c);
      x[i][0].narrow(0, c * 4, 4).narrow(1, c * 4, 4).add_(1.0);
    }
  }
  Tensor y = from_vector<int64_t>(labels);
  nn::Sequential net(std::make_shared<nn::Conv2d>(1, 4, 3, Conv2dOptions{.padding = 1}),
                     std::make_shared<nn::BatchNorm2d>(4), std::make_shared<nn::ReLU>(),
                     std::make_shared<nn::MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}),
                     std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(64, 2));
  optim::SGD opt(net.parameters(), {.lr = 0.1, .momentum = 0.9});
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    Tensor loss = cross_entropy(net(x), y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item();
    last = loss.item();
  }
  CHECK(last < 0.2 * first);
}

TEST_CASE("the README's convolution snippet runs as written") {
  Tensor x = randn({2, 1, 8, 8}), w = randn({4, 1, 3, 3}), b = zeros({4});
  Tensor y = conv2d(x, w, b, {.stride = 2, .padding = 1});
  CHECK(y.sizes() == Shape{2, 4, 4, 4});
  nn::Sequential net(std::make_shared<nn::Conv2d>(1, 32, 3, Conv2dOptions{.padding = "same"}),
                     std::make_shared<nn::BatchNorm2d>(32), std::make_shared<nn::ReLU>(),
                     std::make_shared<nn::MaxPool2d>(MaxPool2dOptions{.kernel_size = 2}));
  CHECK(net(x).sizes() == Shape{2, 32, 4, 4});
}

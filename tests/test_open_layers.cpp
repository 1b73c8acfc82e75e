// The open-convolution layers against literal unfold-and-broadcast references in minigrad ops.
#include "helpers.h"

using namespace mgtest;

namespace {

const UnfoldOptions kGeo{.kernel_size = 3, .stride = 2, .padding = 1, .dilation = 1};

// comb(cols[n, k, l], w[o, k]) as a (N, O, K, L) tensor: the formulation that explodes in memory.
template <class F>
Tensor broadcast(const Tensor& x, const Tensor& w, F comb) {
  Tensor cols = unfold(x, kGeo);
  return comb(cols.unsqueeze(1), w.reshape({1, w.size(0), -1, 1}));
}

Tensor as_image(const Tensor& y, const Tensor& x) {  // (N, O, L) -> (N, O, Ho, Wo) for kGeo
  const int64_t Ho = (x.size(2) + 2 - 3) / 2 + 1, Wo = (x.size(3) + 2 - 3) / 2 + 1;
  return y.reshape({x.size(0), y.size(1), Ho, Wo});
}

Tensor clamp1(const Tensor& t) { return maximum(minimum(t, full_like(t, 1.0)), full_like(t, -1.0)); }

}  // namespace

TEST_CASE("AdderConv2d: -sum|x - w|, the paper's gradients, adaptive scaling, batch norm after") {
  nn::AdderConv2d layer(3, 4, 3, {.stride = 2, .padding = 1, .eta = 0, .batch_norm = false});
  layer.to(kFloat64);
  Tensor x = leaf({2, 3, 7, 6}, Device::cpu());
  Tensor y = layer.forward(x);
  Tensor want = as_image(sum(broadcast(x, layer.weight, [](const Tensor& c, const Tensor& w) { return neg(abs(sub(c, w))); }), {2}), x);
  check_close(vals(y), vals(want), 1e-12);

  // Backward: dW = sum gy (x - w) (full precision), dX = fold(sum_o gy clamp(w - x, -1, 1)).
  Tensor gy = randn(y.sizes(), kFloat64);
  sum(mul(y, gy)).backward();
  Tensor g4 = gy.reshape({2, 4, 1, -1});  // (N, O, 1, L)
  Tensor dw = sum(mul(g4, broadcast(x, layer.weight.detach(), [](const Tensor& c, const Tensor& w) { return sub(c, w); })), {0, 3});
  Tensor dcols = sum(mul(g4, broadcast(x.detach(), layer.weight.detach(), [](const Tensor& c, const Tensor& w) { return clamp1(sub(w, c)); })), {1});
  Tensor dx = fold(dcols, {7, 6}, kGeo);
  check_close(vals(layer.weight.grad()), vals(dw.reshape(layer.weight.sizes())), 1e-10);
  check_close(vals(x.grad()), vals(dx), 1e-10);

  // Adaptive learning-rate scaling: every backward rescales the weight's gradient to
  // eta * sqrt(numel) in norm.
  nn::AdderConv2d scaled(3, 4, 3, {.padding = 1, .eta = 0.2, .batch_norm = false});
  sum(scaled.forward(randn({2, 3, 5, 5}))).backward();
  CHECK(std::sqrt(sum(mul(scaled.weight.grad(), scaled.weight.grad())).item<double>()) ==
        doctest::Approx(0.2 * std::sqrt(double(scaled.weight.numel()))).epsilon(1e-4));

  // Default: batch norm after the adder (its outputs are large and all negative).
  nn::AdderConv2d def(3, 4, 3, {.padding = 1});
  CHECK(def.named_parameters().size() == 3);  // weight, bn.weight, bn.bias
  Tensor yd = def.forward(randn({4, 3, 6, 6}));
  CHECK(std::abs(mean(yd).item<double>()) < 1e-4);
  std::ostringstream os;
  os << def;
  CHECK(os.str().find("AdderConv2d(3, 4, kernel_size=(3, 3)") != std::string::npos);

  CHECK_ERROR(nn::AdderConv2d(3, 4, 3, {.groups = 2}), "AdderConv2d", "groups=2", "in_channels=3");
  CHECK_ERROR(nn::AdderConv2d(3, 4, 3, {.eta = -1}), "AdderConv2d", "eta");
  CHECK_ERROR(layer.forward(randn({1, 2, 5, 5}, kFloat64)), "open_conv2d", "2 channels", "[4, 3, 3, 3]");
}

TEST_CASE("MorphConv2d: dilation max(x + w) and erosion min(x - w)") {
  for (auto type : {nn::Morphology::Dilation, nn::Morphology::Erosion}) {
    const bool dil = type == nn::Morphology::Dilation;
    CAPTURE(dil);
    nn::MorphConv2d layer(2, 3, 3, {.stride = 2, .padding = 1, .type = type});
    layer.to(kFloat64);
    Tensor x = leaf({2, 2, 6, 5}, Device::cpu());
    Tensor v = broadcast(x, layer.weight, [dil](const Tensor& c, const Tensor& w) { return dil ? add(c, w) : sub(c, w); });
    Tensor want = as_image(std::get<0>(dil ? max(v, 2) : min(v, 2)), x);
    check_close(vals(layer.forward(x)), vals(want), 1e-12);
    CHECK_GRAD([&](const std::vector<Tensor>&) { return layer.forward(x); }, x, layer.weight);
  }
  CHECK_ERROR(nn::MorphConv2d(2, 3, 0), "MorphConv2d", "kernel_size");
}

TEST_CASE("KernelConv2d: polynomial and Gaussian kervolution") {
  nn::KernelConv2d poly(2, 3, 3, {.stride = 2, .padding = 1, .degree = 3, .c = 0.5});
  poly.to(kFloat64);
  Tensor x = leaf({2, 2, 6, 5}, Device::cpu());
  Tensor dot = sum(broadcast(x, poly.weight, [](const Tensor& c, const Tensor& w) { return mul(c, w); }), {2});
  Tensor want = add(as_image(pow(add(dot, 0.5), 3.0), x), poly.bias.view({1, -1, 1, 1}));
  check_close(vals(poly.forward(x)), vals(want), 1e-12);
  CHECK_GRAD([&](const std::vector<Tensor>&) { return poly.forward(x); }, x, poly.weight, poly.bias);

  nn::KernelConv2d gauss(2, 3, 3, {.stride = 2, .padding = 1, .kernel = nn::Kervolution::Gaussian, .gamma = 0.1});
  gauss.to(kFloat64);
  Tensor d2 = sum(broadcast(x, gauss.weight, [](const Tensor& c, const Tensor& w) { Tensor d = sub(c, w); return mul(d, d); }), {2});
  Tensor want_g = add(as_image(exp(mul(d2, -0.1)), x), gauss.bias.view({1, -1, 1, 1}));
  check_close(vals(gauss.forward(x)), vals(want_g), 1e-12);
  CHECK_GRAD([&](const std::vector<Tensor>&) { return gauss.forward(x); }, x, gauss.weight, gauss.bias);
  // and the weight's gradient through the separable path, against the reference
  gauss.zero_grad();
  sum(gauss.forward(x)).backward();
  Tensor gw = gauss.weight.grad();
  gauss.weight.zero_grad();
  sum(want_g).backward();
  check_close(vals(gw), vals(gauss.weight.grad()), 1e-10);

  CHECK_ERROR(nn::KernelConv2d(2, 3, 3, {.degree = 0}), "KernelConv2d", "degree");
  CHECK_ERROR(nn::KernelConv2d(2, 3, 3, {.kernel = nn::Kervolution::Gaussian, .gamma = 0}), "KernelConv2d", "gamma");
}

TEST_CASE("SCSConv2d: sharpened cosine similarity, with p and q learned") {
  nn::SCSConv2d layer(2, 3, 3, {.stride = 2, .padding = 1});
  layer.to(kFloat64);
  Tensor x = leaf({2, 2, 6, 5}, Device::cpu());
  Tensor y = layer.forward(x);
  // reference: normalised patches and weights, the full broadcast, then sign(s)|s|^p
  auto reference = [&] {
    Tensor cols = unfold(x, kGeo);
    Tensor qq = mul(layer.q, layer.q);
    Tensor xn = div(cols, add(sqrt(add(sum(mul(cols, cols), {1}, true), 1e-6)), qq));
    Tensor w = layer.weight.reshape({3, -1});
    Tensor wn = div(w, sqrt(add(sum(mul(w, w), {1}, true), 1e-6)));
    Tensor s = sum(mul(xn.unsqueeze(1), wn.reshape({1, 3, -1, 1})), {2});
    Tensor pv = layer.p.view({1, -1, 1});
    return as_image(mul(s, exp(mul(sub(pv, 1.0), log(add(abs(s), 1e-6))))), x);
  };
  Tensor want = reference();
  check_close(vals(y), vals(want), 1e-12);
  Tensor gy = randn(y.sizes(), kFloat64);
  sum(mul(y, gy)).backward();
  std::vector<std::vector<double>> got{vals(x.grad()), vals(layer.weight.grad()), vals(layer.p.grad()), vals(layer.q.grad())};
  x.zero_grad();
  layer.zero_grad();
  sum(mul(want, gy)).backward();
  check_close(got[0], vals(x.grad()), 1e-9);
  check_close(got[1], vals(layer.weight.grad()), 1e-9);
  check_close(got[2], vals(layer.p.grad()), 1e-9);
  check_close(got[3], vals(layer.q.grad()), 1e-9);  // q lives in the patch hook
  CHECK(std::abs(got[3][0]) > 0);
  CHECK_GRAD([&](const std::vector<Tensor>&) { return layer.forward(x); }, x, layer.weight, layer.p, layer.q);
  CHECK_ERROR(nn::SCSConv2d(2, 3, 3, {.eps = 0}), "SCSConv2d", "eps");
}

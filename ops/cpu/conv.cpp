// CPU convolution: the algorithm choice (direct kernels or unfold + GEMM, from the shape and the
// running ISA level), and the entry points into the per-ISA kernels of ops/cpu/isa/.
#include <algorithm>
#include <string>
#include <vector>

#include "../conv.h"
#include "cpu_backend.h"
#include "isa/kernels.h"
#include "loops.h"

namespace minigrad::cpu {

namespace {

template <class F>
void with_kernels(DType dt, const char* op, F&& f) {
  visit_floating(dt, op, [&](auto tag) { f(typed_kernels<typename decltype(tag)::type>(), tag); });
}

}  // namespace

// ---- strided convs as sums of stride-1 ones (polyphase)
// A stride-s conv reads the padded input at s*o + t for output o and tap t. Tap t falls in phase
// t % s at offset t / s, so along each axis the conv splits into s stride-1 convs: phase (a, b)
// reads the plane P_ab[i][j] = x_pad[s_h*i + a][s_w*j + b] (Ho + kh_a - 1 rows by Wo + kw_b - 1
// columns) with the sub-kernel w_ab[i][j] = w[a + s_h*i][b + s_w*j] (kh_a = ceil((kh - a) / s_h)
// taps). The forward adds the phases' outputs; the data gradient of each phase is the gradient of
// its own plane, and every input position lies in exactly one plane (or in none: then no window
// reads it), so dx is gathered back without sums; each phase's weight gradient is its own taps.
// The stride-1 convs run the level's direct kernels, on tiles of images whose phase planes fit
// conv_workspace_limit(). Dilation 1 only (choose_conv sends the rest to unfold + GEMM).
namespace {

struct Phase {
  int64_t a, b;        // the phase's first tap in each axis
  Conv2dGeometry q;    // its stride-1, unpadded geometry on P_ab
};

std::vector<Phase> phases_of(const Conv2dGeometry& g) {
  std::vector<Phase> ps;
  for (int64_t a = 0; a < std::min(g.sh, g.kh); ++a)
    for (int64_t b = 0; b < std::min(g.sw, g.kw); ++b) {
      Conv2dGeometry q;
      q.C = g.C;
      q.kh = (g.kh - a + g.sh - 1) / g.sh;
      q.kw = (g.kw - b + g.sw - 1) / g.sw;
      q.Ho = g.Ho;
      q.Wo = g.Wo;
      q.H = g.Ho + q.kh - 1;
      q.W = g.Wo + q.kw - 1;
      ps.push_back({a, b, q});
    }
  return ps;
}

// Elements of one input plane's phase planes, all phases together.
int64_t phase_plane_elems(const std::vector<Phase>& ps) {
  int64_t n = 0;
  for (const Phase& p : ps) n += p.q.H * p.q.W;
  return n;
}

// Images per tile: a tile's phase planes (and, for the forward, one output tile) within the conv
// workspace limit; at least one image.
int64_t phase_tile(const Conv2dGeometry& g, const std::vector<Phase>& ps, int64_t out_per_image, size_t elem,
                   int64_t N) {
  const int64_t per_image = (g.C * phase_plane_elems(ps) + out_per_image) * int64_t(elem);
  return std::clamp<int64_t>(int64_t(conv_workspace_limit()) / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(N, 1));
}

// The columns j of a phase row that read inside the input (w = s*j + off in [0, W)): [j0, j1).
inline void inside_columns(int64_t s, int64_t off, int64_t W, int64_t n, int64_t& j0, int64_t& j1) {
  j0 = off >= 0 ? 0 : (-off + s - 1) / s;
  j1 = W - 1 - off < 0 ? 0 : std::min(n, (W - 1 - off) / s + 1);
  j0 = std::min(j0, j1);
}

// P_f (planes, q_f.H, q_f.W) = phase f of x (planes, H, W) padded by g, for every phase at once:
// each input plane is read from cache for all of its phases.
template <class T>
void gather_phases(T* const* P, const T* x, int64_t planes, const Conv2dGeometry& g, const std::vector<Phase>& ps) {
  parallel_for(0, planes, grain_for(phase_plane_elems(ps)), [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      const T* src = x + pl * g.H * g.W;
      for (size_t f = 0; f < ps.size(); ++f) {
        const Phase& ph = ps[f];
        const Conv2dGeometry& q = ph.q;
        T* dst = P[f] + pl * q.H * q.W;
        const int64_t off = ph.b - g.pad_w, s = g.sw;
        int64_t j0, j1;
        inside_columns(s, off, g.W, q.W, j0, j1);
        for (int64_t i = 0; i < q.H; ++i) {
          const int64_t h = g.sh * i + ph.a - g.pad_h;
          T* row = dst + i * q.W;
          if (h < 0 || h >= g.H) {
            std::fill(row, row + q.W, T(0));
            continue;
          }
          const T* in = src + h * g.W + off;
          std::fill(row, row + j0, T(0));
          for (int64_t j = j0; j < j1; ++j) row[j] = in[s * j];
          std::fill(row + j1, row + q.W, T(0));
        }
      }
    }
  });
}

// dx (planes, H, W) = the phase planes dP_f (planes, q_f.H, q_f.W) put back at their positions
// (each position lies in one phase, or in none: no window reads it, gradient 0); positions in
// the padding are dropped.
template <class T>
void scatter_phases(T* dx, const T* const* dP, int64_t planes, const Conv2dGeometry& g, const std::vector<Phase>& ps) {
  parallel_for(0, planes, grain_for(g.H * g.W), [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      T* dst = dx + pl * g.H * g.W;
      std::fill(dst, dst + g.H * g.W, T(0));
      for (size_t f = 0; f < ps.size(); ++f) {
        const Phase& ph = ps[f];
        const Conv2dGeometry& q = ph.q;
        const T* src = dP[f] + pl * q.H * q.W;
        const int64_t off = ph.b - g.pad_w, s = g.sw;
        int64_t j0, j1;
        inside_columns(s, off, g.W, q.W, j0, j1);
        for (int64_t i = 0; i < q.H; ++i) {
          const int64_t h = g.sh * i + ph.a - g.pad_h;
          if (h < 0 || h >= g.H) continue;
          T* out = dst + h * g.W + off;
          const T* row = src + i * q.W;
          for (int64_t j = j0; j < j1; ++j) out[s * j] = row[j];
        }
      }
    }
  });
}

// A workspace from minigrad's caching allocator (reused from call to call, not zeroed) holding one
// block per phase, block f of size(ps[f]) elements at at[f].
template <class T>
struct PerPhase {
  Tensor buf;
  std::vector<T*> at;
  template <class F>
  PerPhase(const std::vector<Phase>& ps, F&& size) {
    int64_t n = 0;
    for (const Phase& ph : ps) n += size(ph);
    buf = empty({std::max<int64_t>(n, 1)}, TensorOptions(dtype_of<T>()));
    T* p = buf.data_ptr<T>();
    for (const Phase& ph : ps) {
      at.push_back(p);
      p += size(ph);
    }
  }
};

// Each phase's planes for `planes` input planes.
template <class T>
PerPhase<T> phase_planes(const std::vector<Phase>& ps, int64_t planes) {
  return PerPhase<T>(ps, [&](const Phase& ph) { return planes * ph.q.H * ph.q.W; });
}

// w_f (OC, q.kh, q.kw) = phase f's taps of w (OC rows of kh x kw), for every phase; and back.
template <class T>
PerPhase<T> gather_taps(const T* w, int64_t OC, const Conv2dGeometry& g, const std::vector<Phase>& ps) {
  PerPhase<T> wp(ps, [&](const Phase& ph) { return OC * ph.q.kh * ph.q.kw; });
  for (size_t f = 0; f < ps.size(); ++f) {
    const Phase& ph = ps[f];
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t i = 0; i < ph.q.kh; ++i)
        for (int64_t j = 0; j < ph.q.kw; ++j)
          wp.at[f][(oc * ph.q.kh + i) * ph.q.kw + j] = w[(oc * g.kh + ph.a + g.sh * i) * g.kw + ph.b + g.sw * j];
  }
  return wp;
}
template <class T>
void scatter_taps(T* w, const PerPhase<T>& wp, int64_t OC, const Conv2dGeometry& g, const std::vector<Phase>& ps) {
  for (size_t f = 0; f < ps.size(); ++f) {
    const Phase& ph = ps[f];
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t i = 0; i < ph.q.kh; ++i)
        for (int64_t j = 0; j < ph.q.kw; ++j)
          w[(oc * g.kh + ph.a + g.sh * i) * g.kw + ph.b + g.sw * j] = wp.at[f][(oc * ph.q.kh + i) * ph.q.kw + j];
  }
}

// The phase taps are gathered once a call and the workspaces taken once, for the first (largest)
// tile; each tile reuses them.
template <class T>
void polyphase_forward(const TypedKernels<T>& k, T* y, const T* x, const T* w, int64_t N, int64_t G, int64_t Cout,
                       const Conv2dGeometry& g) {
  const std::vector<Phase> ps = phases_of(g);
  const int64_t OC = Cout * (g.C / G), L = Cout * g.Ho * g.Wo, t_max = phase_tile(g, ps, L, sizeof(T), N);
  const PerPhase<T> wp = gather_taps(w, OC, g, ps);
  const PerPhase<T> P = phase_planes<T>(ps, std::min(t_max, N) * g.C);
  Tensor part = empty({std::max<int64_t>(std::min(t_max, N) * L, 1)}, TensorOptions(dtype_of<T>()));
  for (int64_t n0 = 0; n0 < N; n0 += t_max) {
    const int64_t t = std::min(t_max, N - n0);
    T* yt = y + n0 * L;
    gather_phases(P.at.data(), x + n0 * g.C * g.H * g.W, t * g.C, g, ps);
    for (size_t f = 0; f < ps.size(); ++f) {
      T* out = f == 0 ? yt : part.data_ptr<T>();
      k.conv_forward(out, P.at[f], wp.at[f], t, G, Cout, ps[f].q);
      if (f == 0) continue;
      parallel_for(0, t * L, kParallelGrain, [&](int64_t b, int64_t e) {
        k.arith(Arith::Add, yt + b, yt + b, 1, out + b, 1, T(1), e - b);
      });
    }
  }
}

template <class T>
void polyphase_data(const TypedKernels<T>& k, T* dx, const T* gy, const T* w, int64_t N, int64_t G, int64_t Cout,
                    const Conv2dGeometry& g) {
  const std::vector<Phase> ps = phases_of(g);
  const int64_t OC = Cout * (g.C / G), X = g.C * g.H * g.W, t_max = phase_tile(g, ps, 0, sizeof(T), N);
  const PerPhase<T> wp = gather_taps(w, OC, g, ps);
  const PerPhase<T> dP = phase_planes<T>(ps, std::min(t_max, N) * g.C);
  for (int64_t n0 = 0; n0 < N; n0 += t_max) {
    const int64_t t = std::min(t_max, N - n0);
    for (size_t f = 0; f < ps.size(); ++f)
      k.conv_data(dP.at[f], gy + n0 * Cout * g.Ho * g.Wo, wp.at[f], t, G, Cout, ps[f].q);
    scatter_phases(dx + n0 * X, dP.at.data(), t * g.C, g, ps);
  }
}

template <class T>
void polyphase_weight(const TypedKernels<T>& k, T* dw, const T* gy, const T* x, int64_t N, int64_t G, int64_t Cout,
                      const Conv2dGeometry& g) {
  const std::vector<Phase> ps = phases_of(g);
  const int64_t OC = Cout * (g.C / G), t_max = phase_tile(g, ps, 0, sizeof(T), N);
  const PerPhase<T> wp = gather_taps(dw, OC, g, ps);  // from dw's own values: the kernel adds into them
  const PerPhase<T> P = phase_planes<T>(ps, std::min(t_max, N) * g.C);
  for (int64_t n0 = 0; n0 < N; n0 += t_max) {
    const int64_t t = std::min(t_max, N - n0);
    gather_phases(P.at.data(), x + n0 * g.C * g.H * g.W, t * g.C, g, ps);
    for (size_t f = 0; f < ps.size(); ++f)
      k.conv_weight(wp.at[f], gy + n0 * Cout * g.Ho * g.Wo, P.at[f], t, G, Cout, ps[f].q);
  }
  scatter_taps(dw, wp, OC, g, ps);
}

bool strided(const Conv2dGeometry& g) { return g.sh != 1 || g.sw != 1; }

}  // namespace

ConvChoice CpuBackend::choose_conv(const Conv2dGeometry& g, int64_t groups, int64_t Cout, DType dtype,
                                   ConvAlgorithm requested, bool explain) {
  const CpuIsa isa = cpu_isa();
  const int64_t Og = Cout / groups, Cg = g.C / groups;
  // The words are built only when asked for (explain_conv, MINIGRAD_CONV_VERBOSE): conv calls skip them.
  auto level = [&] { return std::string(" [") + cpu_isa_name(isa) + "]"; };
  auto blocks = [&] {
    char b[512];
    // a strided conv's blocks are those of its first (largest) phase
    const Conv2dGeometry q = strided(g) ? phases_of(g)[0].q : g;
    isa_kernels(isa).describe_direct(b, sizeof b, Og, Cg, q, dtype == kFloat64);
    return std::string(b);
  };
  auto choice = [&](bool direct, auto&& words) { return explain ? ConvChoice{direct, words()} : ConvChoice{direct, {}}; };
  if (requested == ConvAlgorithm::Gemm)
    return choice(false, [] { return std::string("unfold + GEMM: forced by set_conv_algorithm(Gemm)"); });
  const bool is_strided = strided(g);
  // A strided conv runs as s_h*s_w stride-1 ones on phase planes (see polyphase_forward above).
  // When no phase has more than one tap (kernel <= stride: a subsampling 1x1, or patches that do
  // not overlap) its columns are a mere copy of the input and unfold + GEMM does it in one GEMM.
  const int64_t phase_taps = ((g.kh + g.sh - 1) / g.sh) * ((g.kw + g.sw - 1) / g.sw);
  if (is_strided && (g.dh != 1 || g.dw != 1))
    return choice(false, [&] {
      return detail::str_cat("unfold + GEMM: stride (", g.sh, ", ", g.sw, ") with dilation (", g.dh, ", ", g.dw,
                             "); the polyphase direct path takes dilation 1 only");
    });
  if (is_strided && phase_taps == 1)
    return choice(false, [&] {
      return detail::str_cat("unfold + GEMM: stride (", g.sh, ", ", g.sw, ") at least the kernel (", g.kh, "x", g.kw,
                             "): its columns are a subsampled copy of the input, one GEMM");
    });
  if (requested == ConvAlgorithm::Direct)
    return choice(true, [&] {
      return std::string(is_strided ? "direct, polyphase" : "direct") + ": forced by set_conv_algorithm(Direct)" + level() +
             " (" + blocks() + ")";
    });
  // Measured (bench_conv, 64->128 3x3 stride 2 on 32x32, batch 64, Zen 4, three alternating
  // pairs): the polyphase direct path took 76-102 ms against unfold + GEMM's 56-73 at avx512, and
  // 78-96 against 67-113 at avx2: no faster. Its four small stride-1 convs (2x2, 2x1, 1x2, 1x1
  // taps) run the direct kernels below their 3x3 efficiency, and gathering the phase planes costs
  // a pass over the input that im2col's copy does not add to.
  if (is_strided)
    return choice(false, [&] {
      return detail::str_cat("unfold + GEMM: stride (", g.sh, ", ", g.sw, "); the polyphase direct path "
                             "(set_conv_algorithm(Direct)) measured no faster", level());
    });
  // An unpadded 1x1 conv is one GEMM on the input itself. Measured (2 threads, batch 64, fwd+bwd,
  // Xeon model 207, OpenBLAS with SkylakeX / Haswell kernels), the direct kernels beat it up to
  // 128 inputs per group: 128->256 16x16 0.80-0.89x its time at avx512 and 0.78-0.92x at avx2,
  // 64->64 32x32 0.83 / 0.89x, 16->16 32x32 0.73 / 1.01x; from 256 inputs OpenBLAS's larger inner
  // dimension wins (256->512 8x8 1.04-1.13 / 1.07x, 1024->256 7x7 1.04-1.07 / 1.05x,
  // 256->1024 14x14 1.15 / 1.05x). At the generic level every 1x1 goes to the GEMM (the direct
  // kernels' 16-byte vectors lose to OpenBLAS there, see the rule below).
  const bool one_by_one = g.kh == 1 && g.kw == 1 && g.pad_h == 0 && g.pad_w == 0 && g.Ho == g.H && g.Wo == g.W;
  if (one_by_one && (isa == CpuIsa::Generic || Cg > 128))
    return choice(false, [&] {
      return detail::str_cat("1x1 GEMM: an unpadded 1x1 conv is one GEMM on the input itself, no columns (",
                             isa == CpuIsa::Generic ? "the generic level" : "more than 128 inputs per group", ")");
    });
  // At the generic level the direct kernels have 16-byte vectors, while OpenBLAS runs the kernels
  // it picked for this CPU itself: measured (bench_conv --algo, MINIGRAD_CPU_ISA=generic, Zen 4),
  // unfold + GEMM was 1.5-3.5x faster on every layer but those with at most 256 products per output
  // position (LeNet's 1->6 5x5: 150; depthwise 3x3: 9), where the direct kernels were 1.4-3.3x faster.
  const int64_t products = Og * Cg * g.kh * g.kw;
  if (isa == CpuIsa::Generic && products > 256)
    return choice(false, [&] {
      return detail::str_cat("unfold + GEMM: at the generic level OpenBLAS's own kernels beat the direct ones above "
                             "256 products per output position (here ", Og, " outputs x ", Cg, " inputs x ", g.kh, "x",
                             g.kw, " = ", products, ")", level());
    });
  return choice(true, [&] {
    return detail::str_cat("direct: stride 1, ", Og, " outputs and ", Cg, " inputs per group", level(), " (", blocks(), ")");
  });
}

void CpuBackend::im2col(const Tensor& cols, const Tensor& x, const Conv2dGeometry& g) {
  with_kernels(x.dtype(), "im2col", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.im2col(cols.data_ptr<T>(), cols.stride(0), x.data_ptr<T>(), x.size(0), g);
  });
}

void CpuBackend::col2im(const Tensor& x, const Tensor& cols, const Conv2dGeometry& g) {
  with_kernels(x.dtype(), "col2im", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    k.col2im(x.data_ptr<T>(), cols.data_ptr<T>(), cols.stride(0), x.size(0), g);
  });
}


void CpuBackend::conv2d_direct(const Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeometry& g,
                               int64_t groups) {
  with_kernels(x.dtype(), "conv2d_direct", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    if (strided(g))
      return polyphase_forward(k, y.data_ptr<T>(), x.data_ptr<T>(), w.data_ptr<T>(), x.size(0), groups, w.size(0), g);
    k.conv_forward(y.data_ptr<T>(), x.data_ptr<T>(), w.data_ptr<T>(), x.size(0), groups, w.size(0), g);
  });
}

void CpuBackend::conv2d_direct_data(const Tensor& dx, const Tensor& gy, const Tensor& w, const Conv2dGeometry& g,
                                    int64_t groups) {
  with_kernels(gy.dtype(), "conv2d_direct_data", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    if (strided(g))
      return polyphase_data(k, dx.data_ptr<T>(), gy.data_ptr<T>(), w.data_ptr<T>(), gy.size(0), groups, w.size(0), g);
    k.conv_data(dx.data_ptr<T>(), gy.data_ptr<T>(), w.data_ptr<T>(), gy.size(0), groups, w.size(0), g);
  });
}

void CpuBackend::conv2d_direct_weight(const Tensor& dw, const Tensor& gy, const Tensor& x,
                                      const Conv2dGeometry& g, int64_t groups) {
  with_kernels(x.dtype(), "conv2d_direct_weight", [&](const auto& k, auto tag) {
    using T = typename decltype(tag)::type;
    if (strided(g))
      return polyphase_weight(k, dw.data_ptr<T>(), gy.data_ptr<T>(), x.data_ptr<T>(), x.size(0), groups, dw.size(0), g);
    k.conv_weight(dw.data_ptr<T>(), gy.data_ptr<T>(), x.data_ptr<T>(), x.size(0), groups, dw.size(0), g);
  });
}

}  // namespace minigrad::cpu

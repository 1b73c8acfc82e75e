// minigrad: the pooling windows both backends compute, one function each (MG_HOST_DEVICE, so the
// CUDA kernels call the same code): the avg / adaptive window of an output, and the max over a
// window with bounds checks (the first NaN wins, as in PyTorch).
#pragma once
#include <cstdint>
#include <limits>

#include "../core/host_device.h"
#include "backend.h"

namespace minigrad::pool {

struct Window {
  int64_t h0, h1, w0, w1;  // clipped to the input
  int64_t count;           // the avg divisor
};

// The (avg) window of output (oh, ow).
MG_HOST_DEVICE inline Window window(const Pool2dGeometry& p, int64_t oh, int64_t ow) {
  const Conv2dGeometry& g = p.g;
  Window w{};
  if (p.adaptive) {
    w.h0 = oh * g.H / g.Ho;
    w.h1 = ((oh + 1) * g.H + g.Ho - 1) / g.Ho;
    w.w0 = ow * g.W / g.Wo;
    w.w1 = ((ow + 1) * g.W + g.Wo - 1) / g.Wo;
    w.count = (w.h1 - w.h0) * (w.w1 - w.w0);
    return w;
  }
  const int64_t hs = oh * g.sh - g.pad_h, ws = ow * g.sw - g.pad_w;
  const int64_t he = hs + g.kh < g.H + g.pad_h ? hs + g.kh : g.H + g.pad_h;
  const int64_t we = ws + g.kw < g.W + g.pad_w ? ws + g.kw : g.W + g.pad_w;
  const int64_t padded = (he - hs) * (we - ws);
  w.h0 = hs > 0 ? hs : 0;
  w.w0 = ws > 0 ? ws : 0;
  w.h1 = he < g.H ? he : g.H;
  w.w1 = we < g.W ? we : g.W;
  w.count = p.count_include_pad ? padded : (w.h1 - w.h0) * (w.w1 - w.w0);
  return w;
}

// The max over the window of output (oh, ow) of one plane, with bounds checks. *place gets the
// winner's h*W + w (-1 when the window lies wholly in the padding), *tap its ki*kw + kj.
template <class T>
MG_HOST_DEVICE inline T max_window(const T* src, const Conv2dGeometry& g, int64_t oh, int64_t ow, int64_t* place,
                                   int64_t* tap) {
  T best = -std::numeric_limits<T>::infinity();
  int64_t bi = -1, bt = 0;
  bool nan = false;
  for (int64_t ki = 0; ki < g.kh && !nan; ++ki) {
    const int64_t ih = oh * g.sh - g.pad_h + ki * g.dh;
    if (ih < 0 || ih >= g.H) continue;
    for (int64_t kj = 0; kj < g.kw && !nan; ++kj) {
      const int64_t iw = ow * g.sw - g.pad_w + kj * g.dw;
      if (iw < 0 || iw >= g.W) continue;
      const T v = src[ih * g.W + iw];
      nan = v != v;
      if (bi < 0 || v > best || nan) {
        best = v;
        bi = ih * g.W + iw;
        bt = ki * g.kw + kj;
      }
    }
  }
  *place = bi;
  *tap = bt;
  return best;
}

}  // namespace minigrad::pool

#include "plot.h"

#include <stb/stb_image_write.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>

#include "../core/error.h"

namespace minigrad::io {

namespace {

// 5x7 glyphs, one string of 7 rows of 5 bits each ('#' = ink).
const std::map<char, const char*>& font() {
  static const std::map<char, const char*> f = [] {
    std::map<char, const char*> m = {
      {'0', " ### #   ##  ### # ###  ##   # ### "}, {'1', "  #   ##    #    #    #    #   ### "},
      {'2', " ### #   #    #   #   #   #   #####"}, {'3', "#####   #   #     #     ##   # ### "},
      {'4', "   #   ##  # # #  # #####   #    # "}, {'5', "######    ####     #    ##   # ### "},
      {'6', "  ##  #   #    #### #   ##   # ### "}, {'7', "#####    #   #   #   #    #    #   "},
      {'8', " ### #   ##   # ### #   ##   # ### "}, {'9', " ### #   ##   # ####    #   #  ##  "},
      {'.', "                              ##   "}, {'%', "##   ##  #   #   #   #   #  ##   ##"},
      {'-', "               #####               "}, {' ', "                                   "},
      {'A', " ### #   ##   #######   ##   ##   #"}, {'C', " ### #   ##    #    #    #   # ### "},
      {'E', "######    #    #### #    #    #####"}, {'H', "#   ##   ##   #######   ##   ##   #"},
      {'I', " ###   #    #    #    #    #   ### "}, {'L', "#    #    #    #    #    #    #####"},
      {'N', "#   ###  ## # ##  ###   ##   ##   #"}, {'O', " ### #   ##   ##   ##   ##   # ### "},
      {'P', "#### #   ##   ##### #    #    #    "}, {'R', "#### #   ##   ##### # #  #  # #   #"},
      {'S', " #####    #     ###     #    ##### "}, {'T', "#####  #    #    #    #    #    #  "},
      {'U', "#   ##   ##   ##   ##   ##   # ### "}, {'Y', "#   ##   # # #   #    #    #    #  "},
      {'=', "          #####     #####          "}, {'/', "    #    #   #   #   #   #    #    "},
      {'(', "   #   #   #    #    #     #     # "}, {')', " #     #     #    #    #   #   #   "},
    };
    for (const auto& [ch, g] : m) MG_CHECK(std::string(g).size() == 35, "plot: glyph '", ch, "' is malformed");
    return m;
  }();
  return f;
}

struct Canvas {
  int w, h;
  std::vector<unsigned char> px;
  Canvas(int w_, int h_) : w(w_), h(h_), px(size_t(w_ * h_ * 3), 255) {}
  void set(int x, int y, unsigned char r, unsigned char g, unsigned char b) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    unsigned char* p = &px[size_t((y * w + x) * 3)];
    p[0] = r, p[1] = g, p[2] = b;
  }
  void line(double x0, double y0, double x1, double y1, unsigned char r, unsigned char g, unsigned char b, int thick) {
    int n = int(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= n; ++i) {
      double t = double(i) / n;
      int x = int(std::lround(x0 + t * (x1 - x0))), y = int(std::lround(y0 + t * (y1 - y0)));
      for (int dx = -thick / 2; dx <= thick / 2; ++dx)
        for (int dy = -thick / 2; dy <= thick / 2; ++dy) set(x + dx, y + dy, r, g, b);
    }
  }
  void text(int x, int y, const std::string& s, int scale = 2, unsigned char c = 40) {
    for (char ch : s) {
      auto it = font().find(char(std::toupper(static_cast<unsigned char>(ch))));
      const char* glyph = it == font().end() ? font().at(' ') : it->second;
      for (int row = 0; row < 7; ++row)
        for (int col = 0; col < 5; ++col)
          if (glyph[row * 5 + col] == '#')
            for (int a = 0; a < scale; ++a)
              for (int b = 0; b < scale; ++b) set(x + col * scale + a, y + row * scale + b, c, c, c);
      x += 6 * scale;
    }
  }
};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, std::abs(v) >= 10 ? "%.1f" : "%.3f", v);
  return b;
}

void panel(Canvas& c, int x0, int y0, int pw, int ph, const std::string& title, const std::vector<Series>& series) {
  double lo = 1e300, hi = -1e300;
  size_t n = 0;
  for (const auto& s : series)
    for (double v : s.values) lo = std::min(lo, v), hi = std::max(hi, v), n = std::max(n, s.values.size());
  if (n == 0) return;
  if (hi - lo < 1e-9) hi = lo + 1.0;
  const double pad = (hi - lo) * 0.08;
  lo -= pad, hi += pad;
  const int L = x0 + 70, R = x0 + pw - 15, T = y0 + 40, B = y0 + ph - 45;
  c.text(x0 + 70, y0 + 10, title, 2);
  for (int k = 0; k <= 4; ++k) {  // grid and y labels
    int y = B - (B - T) * k / 4;
    c.line(L, y, R, y, 225, 225, 225, 1);
    c.text(x0 + 2, y - 6, fmt(lo + (hi - lo) * k / 4), 2, 90);
  }
  c.line(L, T, L, B, 60, 60, 60, 1);
  c.line(L, B, R, B, 60, 60, 60, 1);
  auto X = [&](size_t i) { return n == 1 ? (L + R) / 2.0 : L + (R - L) * double(i) / double(n - 1); };
  auto Y = [&](double v) { return B - (B - T) * (v - lo) / (hi - lo); };
  for (size_t i = 0; i < n; ++i) {  // epoch ticks
    c.line(X(i), B, X(i), B + 5, 60, 60, 60, 1);
    if (n <= 20 || i % ((n + 9) / 10) == 0) c.text(int(X(i)) - 5, B + 10, std::to_string(i + 1), 2, 90);
  }
  c.text((L + R) / 2 - 30, B + 28, "EPOCH", 2, 90);
  int ly = T + 5;
  for (const auto& s : series) {
    for (size_t i = 0; i + 1 < s.values.size(); ++i) c.line(X(i), Y(s.values[i]), X(i + 1), Y(s.values[i + 1]), s.r, s.g, s.b, 3);
    for (size_t i = 0; i < s.values.size(); ++i)
      for (int d = -3; d <= 3; ++d) c.line(X(i) - 3, Y(s.values[i]) + d, X(i) + 3, Y(s.values[i]) + d, s.r, s.g, s.b, 1);
    c.line(R - 150, ly + 6, R - 125, ly + 6, s.r, s.g, s.b, 3);
    c.text(R - 118, ly, s.label, 2, 40);
    ly += 20;
  }
}

}  // namespace

void save_learning_curve(const std::string& path, const std::string& left_title, const std::vector<Series>& left,
                         const std::string& right_title, const std::vector<Series>& right) {
  Canvas c(1000, 420);
  panel(c, 0, 0, 500, 420, left_title, left);
  panel(c, 500, 0, 500, 420, right_title, right);
  MG_CHECK(stbi_write_png(path.c_str(), c.w, c.h, 3, c.px.data(), c.w * 3), "save_learning_curve: cannot write ", path);
}

}  // namespace minigrad::io

// Images through Debian's stb (stb_image to read, stb_image_write to write PNG).
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "dataset.h"

namespace minigrad::io {

Tensor load_image(const std::string& path, int channels) {
  MG_CHECK(channels == 0 || channels == 1 || channels == 3, "load_image: channels must be 0, 1 or 3, got ", channels);
  MG_CHECK(std::filesystem::exists(path), "load_image: file ", path, " does not exist");
  int w = 0, h = 0, c = 0;
  unsigned char* px = stbi_load(path.c_str(), &w, &h, &c, channels);
  MG_CHECK(px, "load_image: cannot decode ", path, " (", stbi_failure_reason(), ")");
  const int C = channels ? channels : c;
  Tensor t = empty({C, h, w});
  float* d = t.data_ptr<float>();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < C; ++k) d[(int64_t(k) * h + y) * w + x] = float(px[(int64_t(y) * w + x) * C + k]) / 255.0f;
  stbi_image_free(px);
  return t;
}

void save_png(const std::string& path, const Tensor& image) {
  MG_CHECK(image.dim() == 2 || image.dim() == 3, "save_png: expected (C, H, W) or (H, W), got ", image.sizes());
  Tensor t = (image.dim() == 2 ? image.unsqueeze(0) : image).detach().to(Device::cpu()).to(kFloat32).contiguous();
  const int64_t C = t.size(0), H = t.size(1), W = t.size(2);
  MG_CHECK(C == 1 || C == 3 || C == 4, "save_png: expected 1, 3 or 4 channels, got ", C);
  std::vector<unsigned char> px(size_t(C * H * W));
  const float* s = t.data_ptr<float>();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t k = 0; k < C; ++k)
        px[size_t((y * W + x) * C + k)] = static_cast<unsigned char>(std::clamp(s[(k * H + y) * W + x], 0.0f, 1.0f) * 255.0f + 0.5f);
  MG_CHECK(stbi_write_png(path.c_str(), int(W), int(H), int(C), px.data(), int(W * C)), "save_png: cannot write ", path);
}

}  // namespace minigrad::io

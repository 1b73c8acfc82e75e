// A JPEG of (h, w, comps) uint8 pixels from libjpeg's encoder, baseline or progressive (libjpeg's
// simple progression: 10 scans for YCbCr, 6 for gray): the JPEG tests' and fuzz seeds' files.
// comps: 1 gray, 3 RGB (stored as YCbCr), 4 CMYK (stored as CMYK, or as YCCK with ycck; libjpeg
// writes Adobe's marker for both).
#pragma once
#include <cstdint>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including them
#include <cstdlib>
#include <jpeglib.h>
#include <stdexcept>
#include <string>
#include <vector>

namespace mgtest {

inline std::string encode_jpeg(const std::vector<uint8_t>& px, int w, int h, int comps, bool progressive, int quality = 95,
                               bool ycck = false) {
  if (px.size() != size_t(w) * size_t(h) * size_t(comps)) throw std::invalid_argument("encode_jpeg: pixel count");
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);  // errors exit the program: these are the tests' own, valid images
  jpeg_create_compress(&c);
  unsigned char* out = nullptr;
  unsigned long len = 0;
  jpeg_mem_dest(&c, &out, &len);
  c.image_width = JDIMENSION(w), c.image_height = JDIMENSION(h), c.input_components = comps;
  c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_set_defaults(&c);
  if (comps == 4) jpeg_set_colorspace(&c, ycck ? JCS_YCCK : JCS_CMYK);
  jpeg_set_quality(&c, quality, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + size_t(c.next_scanline) * size_t(w) * size_t(comps);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string bytes(reinterpret_cast<char*>(out), len);
  std::free(out);
  return bytes;
}

}  // namespace mgtest

// minigrad: a learning-curve plot as a PNG (stb_image_write), with no other dependency.
#pragma once
#include <string>
#include <vector>

namespace minigrad::io {

struct Series {
  std::string label;           // drawn in the legend (digits, A-Z and a few symbols)
  std::vector<double> values;  // one per epoch
  unsigned char r, g, b;
};

// Two panels side by side (e.g. loss on the left, accuracy on the right), x = epoch 1..n.
void save_learning_curve(const std::string& path, const std::string& left_title, const std::vector<Series>& left,
                         const std::string& right_title, const std::vector<Series>& right);

}  // namespace minigrad::io

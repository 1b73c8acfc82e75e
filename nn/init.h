// minigrad: parameter initialisers (in place, recorded by no tape), as torch::nn::init.
#pragma once
#include <utility>

#include "../core/generator.h"
#include "../core/tensor.h"

namespace minigrad::nn::init {

enum class Nonlinearity { Linear, Conv, Sigmoid, Tanh, ReLU, LeakyReLU };
enum class FanMode { FanIn, FanOut };

// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (2-D and more).
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& w);
double calculate_gain(Nonlinearity nl, double param = 0.01);

void uniform_(const Tensor& t, double a = 0.0, double b = 1.0, Generator* gen = nullptr);
void normal_(const Tensor& t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
void constant_(const Tensor& t, double v);
void zeros_(const Tensor& t);
void ones_(const Tensor& t);
// He initialisation; a is the negative slope of a leaky ReLU.
void kaiming_uniform_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                      Nonlinearity nl = Nonlinearity::LeakyReLU, Generator* gen = nullptr);
void kaiming_normal_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                     Nonlinearity nl = Nonlinearity::LeakyReLU, Generator* gen = nullptr);
// Glorot initialisation.
void xavier_uniform_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
void xavier_normal_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);

}  // namespace minigrad::nn::init

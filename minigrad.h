// minigrad: the one header a program includes.
#pragma once
#include "core/autograd.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/generator.h"
#include "core/gradcheck.h"
#include "core/tensor.h"
#include "core/threading.h"
#include "ops/conv.h"
#include "ops/norm.h"
#include "ops/ops.h"
#include "ops/pool.h"

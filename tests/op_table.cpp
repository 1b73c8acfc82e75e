// The op-case runner: see op_table.h for what it checks.
#include "op_table.h"

#include <functional>
#include <sstream>

namespace mgtest {

Tensor uniform(const Shape& s, double lo, double hi) { return add(mul(rand(s, kFloat64), hi - lo), lo); }
Tensor normal(const Shape& s) { return randn(s, kFloat64); }
Tensor ints(const std::vector<int64_t>& v, const Shape& s) { return from_vector<int64_t>(v, s); }

Tensor strided_view(const Tensor& t) {
  if (t.dim() == 0 || t.numel() < 2) return t;
  Tensor pair = ones({2}, TensorOptions(t.dtype()).device(t.device()));
  Tensor v = mul(t.unsqueeze(-1), pair).select(-1, 0);
  REQUIRE_FALSE(v.is_contiguous());
  return v;
}

namespace {

struct Run {
  Tensor out;                 // on the CPU, float64 when floating
  std::vector<Tensor> grads;  // on the CPU, float64; undefined where an input gets none
};

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

bool floating(const Tensor& t) { return t.dtype() == kFloat32 || t.dtype() == kFloat64; }

bool differentiated(const OpCase& c, const std::vector<Tensor>& base, size_t i) {
  if (!c.grad || !floating(base[i])) return false;
  for (size_t f : c.fixed)
    if (f == i) return false;
  return true;
}

// Calls the op on `dev` with float inputs as `dt`, optionally through strided views, and (when
// cotangent is defined and the op is differentiable) runs backward with it.
Run run(const OpCase& c, const std::vector<Tensor>& base, Device dev, DType dt, bool strided,
        const Tensor& cotangent) {
  std::vector<Tensor> leaves, args;
  for (size_t i = 0; i < base.size(); ++i) {
    Tensor t = base[i].to(dev);
    if (floating(t)) t = t.to(dt);
    t = t.clone().detach();
    if (differentiated(c, base, i) && cotangent.defined()) t.requires_grad_(true);
    leaves.push_back(t);
    args.push_back(strided ? strided_view(t) : t);
  }
  Run r;
  Tensor out = c.fn(args);
  REQUIRE(out.defined());
  CHECK(out.device() == dev);
  if (floating(out)) CHECK_MESSAGE(out.dtype() == dt, "output dtype ", out.dtype(), ", inputs ", dt);
  bool wants_grad = false;
  for (const Tensor& l : leaves) wants_grad = wants_grad || l.requires_grad();
  if (wants_grad) CHECK_MESSAGE(out.requires_grad(), "the output records no gradient");
  if (cotangent.defined() && c.grad && out.requires_grad()) {
    out.backward(cotangent.to(dev).to(out.dtype()));
    for (const Tensor& l : leaves)
      r.grads.push_back(l.requires_grad() && l.grad().defined() ? l.grad().cpu().to(kFloat64) : Tensor());
  }
  r.out = out.cpu();
  if (floating(r.out)) r.out = r.out.to(kFloat64);
  return r;
}

void check_same(const Run& got, const Run& want, double tol, const char* what) {
  CAPTURE(what);
  REQUIRE_MESSAGE(got.out.sizes() == want.out.sizes(), shape_str(got.out.sizes()), " vs ", shape_str(want.out.sizes()));
  check_close(vals(got.out), vals(want.out), tol);
  REQUIRE(got.grads.size() == want.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i) {
    CAPTURE(i);
    REQUIRE(got.grads[i].defined() == want.grads[i].defined());
    if (got.grads[i].defined()) check_close(vals(got.grads[i]), vals(want.grads[i]), tol);
  }
}

// The checks at one device (and, on the CPU, one ISA level). Returns the float64 run.
Run check_device(const OpCase& c, const std::vector<Tensor>& base, const Values& want, const Tensor& cot,
                 Device dev) {
  Run r64 = run(c, base, dev, kFloat64, false, cot);
  CHECK_MESSAGE(r64.out.sizes() == want.shape, "shape ", shape_str(r64.out.sizes()), ", reference ", shape_str(want.shape));
  if (r64.out.sizes() == want.shape) check_close(vals(r64.out), want.v, c.tol);
  bool any_float = false;
  for (const Tensor& t : base) any_float = any_float || floating(t);
  if (c.f32 && any_float) {
    Run r32 = run(c, base, dev, kFloat32, false, Tensor());
    CAPTURE("float32");
    if (r32.out.sizes() == want.shape) check_close(vals(r32.out), want.v, c.tol32);
  }
  // strided inputs: the same values and gradients (up to the order of float64 sums)
  check_same(run(c, base, dev, kFloat64, true, cot), r64, 1e-12, "strided inputs");
  return r64;
}

}  // namespace

void run_op_case(const OpCase& c, const RunOptions& o) {
  CAPTURE(c.name);
  manual_seed(std::hash<std::string>{}(c.family + "/" + c.name) % 100000);
  const std::vector<Tensor> base = c.make();
  std::vector<Values> in;
  for (const Tensor& t : base) in.push_back({t.sizes(), vals(t)});
  const Values want = c.ref(in);
  REQUIRE(numel_of(want.shape) == want.numel());

  // One cotangent for every device and level: the CPU float64 output's shape.
  Tensor cot;
  {
    Run probe = run(c, base, Device::cpu(), kFloat64, false, Tensor());
    if (floating(probe.out)) cot = randn(probe.out.sizes(), kFloat64);
  }
  const Run cpu = run(c, base, Device::cpu(), kFloat64, false, cot);

  for (Device dev : devices()) {
    CAPTURE(dev);
    if (dev.is_cpu() && o.every_isa) {
      for_each_cpu_isa([&] { check_same(check_device(c, base, want, cot, dev), cpu, 1e-12, "this ISA level against the running one"); });
    } else {
      Run r = check_device(c, base, want, cot, dev);
      if (!dev.is_cpu()) check_same(r, cpu, 1e-10, "this device against the CPU");
    }
    std::vector<Tensor> leaves;
    bool any = false;
    for (size_t i = 0; i < base.size(); ++i) {
      Tensor t = base[i].to(dev).clone().detach();
      if (differentiated(c, base, i)) t.requires_grad_(any = true);
      leaves.push_back(t);
    }
    if (any && cot.defined()) {
      auto r = gradcheck(c.fn, leaves, c.gradcheck);
      CHECK_MESSAGE(r.ok, r.message);
    }
  }
  for (size_t i = 0; i < c.bad.size(); ++i) {
    CAPTURE(i);
    std::string m = error_of(c.bad[i].call);
    CHECK_MESSAGE(!m.empty(), "bad call ", i, " did not throw minigrad::Error");
    for (const std::string& f : c.bad[i].fragments)
      CHECK_MESSAGE(m.find(f) != std::string::npos, "message '", m, "' lacks '", f, "'");
  }
}

void run_op_family(const std::vector<OpCase>& table, const std::string& family, const RunOptions& o) {
  int n = 0;
  for (const OpCase& c : table)
    if (c.family == family) {
      run_op_case(c, o);
      ++n;
    }
  REQUIRE_MESSAGE(n > 0, "no op cases in family ", family);
}

}  // namespace mgtest

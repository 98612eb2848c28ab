// Running and comparing the cases of the op table (tests/ops/op_table.h).
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/autograd.h"
#include "tests/ops/op_table.h"
#include "tests/test_util.h"

namespace mt::test {

Tol default_tol(DType dt) {
  switch (dt) {
    case DType::F64: return {1e-10, 1e-12, 0};
    case DType::BF16:
    case DType::F16: return {3e-2, 1e-2, 1e-3};
    default: return {1e-4, 1e-5, 0};
  }
}

namespace {

// The dtype input `in` is stored in when the case runs in dt.
DType storage_dtype(const OpInput& in, DType dt) {
  if (!is_floating(in.value.dtype())) return in.value.dtype();
  if (in.role == Role::Master) return dt == DType::F64 ? DType::F64 : DType::F32;
  return dt;
}

}  // namespace

const OpEntry& op_entry(const std::string& name) {
  for (const OpEntry& e : op_table())
    if (e.name == name) return e;
  throw Error(ErrorKind::Internal, "no op table entry " + name);
}

std::vector<std::string> op_names(const std::function<bool(const OpEntry&)>& keep) {
  std::vector<std::string> names;
  for (const OpEntry& e : op_table())
    if (keep(e)) names.push_back(e.name);
  return names;
}

OpCase op_case(std::string what, std::vector<OpInput> inputs,
               std::function<std::vector<Tensor>(const std::vector<Tensor>&)> run) {
  OpCase c;
  c.what = std::move(what);
  c.inputs = std::move(inputs);
  c.run = std::move(run);
  return c;
}

OpRun run_case(const OpCase& c, DType dt, Device dev, bool f64_reference) {
  std::vector<Tensor> x;
  for (const OpInput& in : c.inputs) {
    if (!in.value.defined()) {
      x.emplace_back();
      continue;
    }
    Tensor t = in.value.to(storage_dtype(in, dt));
    if (f64_reference && is_floating(t.dtype())) t = t.to(DType::F64);
    t = t.to(dev).clone();  // a fresh leaf per run
    if (in.grad && is_floating(t.dtype())) set_requires_grad(t);
    x.push_back(t);
  }
  std::vector<Tensor> outs;
  for (const Tensor& o : c.run(x))
    if (o.defined()) outs.push_back(o);
  OpRun r;
  std::vector<Tensor> diff, seeds;
  Generator gen(4242);
  for (size_t i = 0; i < outs.size(); ++i) {
    const Tensor& o = outs[i];
    EXPECT_EQ(o.device(), dev) << c.what << ": output " << i;
    r.names.push_back("output " + std::to_string(i));
    r.values.push_back(o.to(Device::cpu()).to_vector());
    // The upstream gradient: the same values (rounded to dt, exact in the output's dtype) in every run.
    Tensor seed = Tensor::rand(o.shape(), gen, -1.0, 1.0, DType::F32).to(dt);
    if (requires_grad(o) && is_floating(o.dtype())) {
      diff.push_back(o);
      seeds.push_back(seed.to(o.dtype()).to(dev));  // exact: dt values fit the output dtype
    }
  }
  if (!diff.empty()) backward(seed_loss(diff, seeds));
  for (size_t i = 0; i < x.size(); ++i) {
    if (!x[i].defined() || !requires_grad(x[i])) continue;
    const Tensor g = grad(x[i]);
    EXPECT_TRUE(g.defined()) << c.what << ": no gradient for input " << i;
    if (!g.defined()) continue;
    EXPECT_EQ(g.dtype(), x[i].dtype()) << c.what << ": gradient of input " << i;
    EXPECT_EQ(g.device(), dev) << c.what << ": gradient of input " << i;
    r.names.push_back("grad of input " + std::to_string(i));
    r.values.push_back(g.to(Device::cpu()).to_vector());
  }
  current_tape().clear();
  return r;
}

void expect_runs_match(const OpRun& actual, const OpRun& ref, const Tol& t, const std::string& what) {
  ASSERT_EQ(actual.names, ref.names) << what;
  for (size_t k = 0; k < ref.values.size(); ++k) {
    const std::vector<double>& a = actual.values[k];
    const std::vector<double>& b = ref.values[k];
    ASSERT_EQ(a.size(), b.size()) << what << " " << ref.names[k];
    double scale = 0.0;
    for (double v : b) scale = std::max(scale, std::fabs(v));
    ASSERT_TRUE(std::isfinite(scale)) << what << " " << ref.names[k] << ": the reference holds inf or NaN";
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double err = std::fabs(a[i] - b[i]);
      if (!(err <= t.abs + t.atol * scale + t.rtol * std::fabs(b[i]))) {  // false for NaN
        if (bad++ == 0) first = i;
      }
    }
    EXPECT_EQ(bad, 0u) << what << " " << ref.names[k] << ": " << bad << " of " << a.size()
                       << " values out of tolerance, first at " << first << ": " << (bad ? a[first] : 0.0) << " vs "
                       << (bad ? b[first] : 0.0) << " (max |ref| " << scale << ", rtol " << t.rtol << ", atol "
                       << t.atol << ", abs " << t.abs << ")";
  }
}

Tensor pack_all(const std::vector<Tensor>& outs) {
  std::vector<Tensor> parts;
  int64_t n = 0;
  for (const Tensor& o : outs)
    if (o.defined()) {
      parts.push_back(o);
      n += o.numel();
    }
  Tensor out = Tensor::empty({n}, DType::F64, parts.empty() ? Device::cpu() : parts[0].device());
  int64_t off = 0;
  for (const Tensor& p : parts) {
    if (p.numel()) out.as_strided({p.numel()}, {1}, out.offset() + off).copy_(p.contiguous().view({p.numel()}));
    off += p.numel();
  }
  if (any_requires_grad(parts)) {
    std::vector<Shape> shapes;
    std::vector<DType> dtypes;
    for (const Tensor& p : parts) {
      shapes.push_back(p.shape());
      dtypes.push_back(p.dtype());
    }
    auto node = make_lambda_node("op_table_pack", [shapes, dtypes](const std::vector<Tensor>& g) {
      const Tensor gc = g[0].contiguous();
      std::vector<Tensor> r;
      int64_t o = 0;
      for (size_t i = 0; i < shapes.size(); ++i) {
        const int64_t m = shape_numel(shapes[i]);
        r.push_back(m ? gc.as_strided({m}, {1}, gc.offset() + o).to(dtypes[i]).clone().view(shapes[i])
                      : Tensor::zeros(shapes[i], dtypes[i], gc.device()));
        o += m;
      }
      return r;
    });
    record_node(node, parts, {out});
  }
  return out;
}

}  // namespace mt::test

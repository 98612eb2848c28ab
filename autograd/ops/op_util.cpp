#include "autograd/ops/op_util.h"

#include "autograd/tape.h"

namespace mt::ops {

void check_float(const char* op, const char* arg, const Tensor& t) {
  MT_CHECK_SHAPE(t.defined(), op, ": ", arg, " is undefined");
  MT_CHECK_SHAPE(is_floating(t.dtype()), op, ": ", arg, " must be a float tensor, got ", t.describe());
}

void check_same(const char* op, const std::vector<const Tensor*>& ts) {
  for (size_t i = 1; i < ts.size(); ++i) {
    if (ts[i]->device() != ts[0]->device() || ts[i]->dtype() != ts[0]->dtype()) {
      std::string all;
      for (size_t j = 0; j < ts.size(); ++j) all += (j ? ", " : "") + ts[j]->describe();
      throw Error(ErrorKind::Shape, str(op, ": inputs must share device and dtype, got ", all));
    }
  }
}

int64_t wrap_dim(const char* op, int64_t dim, int64_t rank) {
  int64_t d = dim < 0 ? dim + rank : dim;
  MT_CHECK_SHAPE(d >= 0 && d < (rank == 0 ? 1 : rank), op, ": dimension ", dim, " out of range for rank ", rank);
  return d;
}

DType grad_dtype(const Tensor& t) {
  const auto& m = t.impl().autograd;
  return m && m->grad_may_be_f32 && is_half(t.dtype()) ? DType::F32 : t.dtype();
}

void check_index(const char* op, const char* arg, const Tensor& t) {
  MT_CHECK_SHAPE(t.defined(), op, ": ", arg, " is undefined");
  MT_CHECK_SHAPE(t.dtype() == DType::I32 || t.dtype() == DType::I64, op, ": ", arg, " must be i32 or i64, got ",
                 t.describe());
}

Tensor bad_flag(int64_t n, Device dev) { return Tensor::full({1}, static_cast<double>(n), DType::I64, dev); }

int64_t read_flag(const Tensor& flag, int64_t n) {
  const int64_t v = flag.to_vector_i64()[0];
  return v >= n ? -1 : v;
}

int64_t element_i64(const Tensor& packed, int64_t i) {
  return packed.as_strided({1}, {1}, packed.offset() + i).to_vector_i64()[0];
}

}  // namespace mt::ops

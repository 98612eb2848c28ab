#include "data/batch.h"

#include <algorithm>

namespace mt::data {

Batch padded_eval_batch(int64_t batch_size, int64_t L, int64_t real) {
  Batch b;
  b.ids = Tensor::zeros({batch_size, L}, DType::I64);
  b.targets = Tensor::full({batch_size, L}, static_cast<double>(kIgnoreIndex), DType::I64);
  if (real < batch_size) {  // padding rows: nothing scored, mask 0
    b.mask = Tensor::zeros({batch_size, L}, DType::F32);
    float* m = b.mask.data<float>();
    std::fill(m, m + real * L, 1.0f);
  }
  b.tokens = real * L;
  return b;
}

}  // namespace mt::data

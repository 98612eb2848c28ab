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

Tensor document_starts(const Tensor& ids_in, int64_t eod_id) {
  if (eod_id < 0) return Tensor();
  const Tensor ids = ids_in.to(Device::cpu()).contiguous();
  const int64_t B = ids.size(0), L = ids.size(1);
  const int64_t* p = ids.data<int64_t>();
  Tensor r;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 1; t < L; ++t) {
      if (p[b * L + t - 1] != eod_id) continue;
      if (!r.defined()) r = Tensor::zeros({B, L}, DType::I32);
      r.data<int32_t>()[b * L + t] = 1;
    }
  return r;
}

}  // namespace mt::data

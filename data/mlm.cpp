#include "data/mlm.h"

#include <algorithm>

#include "core/error.h"
#include "data/sample_rng.h"

namespace mt::data {

void apply_mlm_masking(Batch& b, const MlmMasking& m, uint64_t seed, uint64_t domain, int64_t first) {
  MT_CHECK(m.probability > 0 && m.probability < 1 && m.random_hi > m.random_lo, ErrorKind::Internal,
           "MLM masking: probability ", m.probability, ", random ids [", m.random_lo, ", ", m.random_hi, ")");
  Tensor ids = b.ids.contiguous().clone();
  const int64_t B = ids.size(0), L = ids.size(1);
  Tensor targets = Tensor::full({B, L}, static_cast<double>(kIgnoreIndex), DType::I64);
  int64_t* ip = ids.data<int64_t>();
  int64_t* tp = targets.data<int64_t>();
  const Tensor mask = b.mask.defined() ? b.mask.contiguous() : Tensor();
  const float* mp = mask.defined() ? mask.data<float>() : nullptr;
  // Thresholds on 53-bit uniforms: selection with probability p, then 80% / 10% / 10%.
  const uint64_t one = uint64_t{1} << 53;
  const uint64_t select_below = static_cast<uint64_t>(m.probability * static_cast<double>(one));
  const uint64_t span = static_cast<uint64_t>(m.random_hi - m.random_lo);
  for (int64_t r = 0; r < B; ++r) {
    SampleRng rng(seed, domain, static_cast<uint64_t>(first + r));
    for (int64_t t = 0; t < L; ++t) {
      // Every position draws the same number of values, so one position's outcome never shifts another's.
      const uint64_t u = rng.next64() >> 11, kind = rng.below(10), replacement = rng.below(span);
      int64_t& id = ip[r * L + t];
      if (u >= select_below || (mp && mp[r * L + t] == 0) ||
          std::find(m.keep.begin(), m.keep.end(), id) != m.keep.end())
        continue;
      tp[r * L + t] = id;
      if (kind < 8) {
        id = m.mask_id;
      } else if (kind == 8) {
        id = m.random_lo + static_cast<int64_t>(replacement);
      }
    }
  }
  b.ids = ids;
  b.targets = targets;
}

}  // namespace mt::data

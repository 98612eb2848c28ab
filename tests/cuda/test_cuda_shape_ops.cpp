// Shape ops on CUDA tensors (strided copies through core's CUDA copy kernel) forward + backward vs CPU.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/ops/shape_ops.h"
#include "op_compare.h"

using namespace mt;

namespace {
Tensor randn32(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, 1.0, DType::F32);
}
}  // namespace

TEST(CudaShape, ViewsAndCopiesMatchCpu) {
  MT_REQUIRE_CUDA();
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  std::vector<std::pair<F, std::vector<Tensor>>> cases = {
      {[](const std::vector<Tensor>& v) {
         return reshape(transpose(v[0], 0, 2), {-1, 7});
       },
       {randn32({7, 13, 3}, 1)}},
      {[](const std::vector<Tensor>& v) {
         return permute(v[0], {2, 0, 1});
       },
       {randn32({2, 3, 257}, 2)}},
      {[](const std::vector<Tensor>& v) { return slice(v[0], 1, -200, 257, 3); }, {randn32({5, 257}, 3)}},
      {[](const std::vector<Tensor>& v) {
         return concat({v[0], v[1], v[2]}, 1);
       },
       {randn32({3, 1, 13}, 4), randn32({3, 7, 13}, 5), randn32({3, 2, 13}, 6)}},
      {[](const std::vector<Tensor>& v) { return flip(v[0], 1); }, {randn32({7, 13, 2}, 7)}},
      {[](const std::vector<Tensor>& v) { return squeeze(unsqueeze(contiguous(transpose(v[0], 0, 1)), 1), 1); },
       {randn32({13, 7}, 8)}},
  };
  for (DType dt : {DType::F32, DType::BF16})
    for (size_t i = 0; i < cases.size(); ++i)
      test::expect_cuda_matches_cpu(cases[i].first, cases[i].second, dt, 1e-12, 0.0, 0.0,
                                    "shape case " + std::to_string(i));  // exact: pure data movement
}

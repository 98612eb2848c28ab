// Reverse-complement equivariance on the GPU (bf16 compute): the output for a sequence's reverse complement is the
// reverse complement of its output, and an RC-equivariant classifier gives both one prediction, within bf16
// tolerances; and the GPU forward follows the CPU's.
#include "autograd/ops/shape_ops.h"
#include "nn/heads.h"
#include "test_util.h"

using namespace mt;

namespace {

MambaConfig rc_config() {
  MambaConfig c;
  c.vocab_size = 8;
  c.d_model = 64;
  c.n_layer = 2;
  c.bidirectional = true;
  c.rc_equivariant = true;
  c.rc_complement = {0, 1, 5, 4, 3, 2, 6, 7};
  c.finalize();
  return c;
}

Tensor reverse_complement(const Tensor& ids, const MambaConfig& c) {
  std::vector<int64_t> v = ids.to_vector_i64(), out(v.size());
  const int64_t B = ids.size(0), L = ids.size(1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) out[b * L + t] = c.rc_complement[v[b * L + L - 1 - t]];
  return Tensor::from_vector_i64(out, {B, L});
}

}  // namespace

TEST(CudaGenomics, RcEquivarianceHoldsOnTheGpu) {
  MT_REQUIRE_CUDA();
  const MambaConfig c = rc_config();
  nn::MambaForSequenceClassification m(c, 2, "mean");
  Generator g(1);
  m.init_parameters(g);
  Generator ig(2);
  const Tensor x = Tensor::randint({4, 300}, ig, 2, 7);
  NoGradGuard ng;
  nn::ForwardOptions fo;
  const Tensor cpu = m.forward(x, fo);
  m.to(Device::cuda());
  for (DType cd : {DType::F32, DType::BF16}) {
    fo.compute_dtype = cd;
    const Tensor a = m.forward(x.to(Device::cuda()), fo).to(Device::cpu()).to(DType::F32);
    const Tensor b = m.forward(reverse_complement(x, c).to(Device::cuda()), fo).to(Device::cpu()).to(DType::F32);
    const double tol = cd == DType::F32 ? 1e-4 : 3e-2;
    SCOPED_TRACE(dtype_name(cd));
    EXPECT_CLOSE(b, a, tol, tol);
    EXPECT_CLOSE(a, cpu, tol, tol);
    const Tensor ha = m.backbone.forward(x.to(Device::cuda()), fo).last_hidden_state.to(Device::cpu());
    const Tensor hb =
        m.backbone.forward(reverse_complement(x, c).to(Device::cuda()), fo).last_hidden_state.to(Device::cpu());
    EXPECT_CLOSE(flip(flip(hb, 1), 2).to(DType::F32), ha.to(DType::F32), tol, tol);
  }
}

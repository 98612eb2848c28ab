// CPU decode step: the calls of kernels/decode_step.h in order.
#include "kernels/decode_step.h"

#include "core/error.h"

namespace mt::kernels {

void decode_step_check(const DecodeStepParams& p) {
  MT_CHECK(p.n_layer >= 1 && p.n_layer <= kDecodeStepMaxLayers, ErrorKind::Shape, "decode_step: ", p.n_layer,
           " layers (1 to ", kDecodeStepMaxLayers, ")");
  MT_ASSERT(p.first >= 0, "decode_step: bad first layer");
  MT_ASSERT(p.B >= 0 && p.V >= 1 && p.d_model >= 1 && p.d_inner >= 1 && p.N >= 1 && p.R >= 1 && p.K >= 1,
            "decode_step: bad sizes");
  MT_ASSERT((p.first > 0 || (p.embedding && p.tokens)) && (!p.last || (p.norm_f_w && p.lm_head)) && p.h && p.res[0] &&
                p.res[1] && p.xz && p.xproj && p.y && p.logits,
            "decode_step: missing buffers");
}

void decode_step_cpu(const DecodeStepParams& p) {
  decode_step_check(p);
  for (int64_t l = 0; l < p.n_layer; ++l) {
    decode_gemv_cpu(decode_step_in_proj(p, l));
    ssm_step_cpu(decode_step_ssm(p, l));
    decode_gemv_cpu(decode_step_out_proj(p, l));
  }
  if (p.last) decode_gemv_cpu(decode_step_lm_head(p));
}

}  // namespace mt::kernels

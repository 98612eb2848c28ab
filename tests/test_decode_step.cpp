// The single-token decode kernels on the CPU (kernels/ssm_step.h, decode_gemv.h) against the training ops they
// shorten: causal_conv1d and selective_scan with L = 1, the norms, linear.
#include <cmath>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/shape_ops.h"
#include "kernels/decode_gemv.h"
#include "kernels/ssm_step.h"
#include "test_util.h"

using namespace mt;
using namespace mt::kernels;

namespace {

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::F64, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, dt);
}

void expect_near(const Tensor& got, const Tensor& want, double tol, const char* what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> a = got.to_vector(), b = want.to_vector();
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], tol * (1.0 + std::fabs(b[i]))) << what << " [" << i << "]";
}

}  // namespace

TEST(SsmStep, EqualsSelectiveScanOfOneStepWithTheState) {
  NoGradGuard ng;
  const int64_t B = 2, D = 6, N = 4, R = 3, E = R + 2 * N, P = 3;
  for (bool with_z : {false, true}) {
    Tensor uz = randn({B, 2 * D}, 10);
    Tensor xproj = randn({P, B, E}, 11, DType::F64, 0.5);
    Tensor dt_w = randn({D, R}, 12, DType::F64, 0.5), dt_b = randn({D}, 13);
    Tensor A = neg(exp(randn({D, N}, 14))), Dsk = randn({D}, 15);
    Tensor h0 = randn({B, D, N}, 16);
    // Reference: sum the partials, dt_proj, then the scan with L = 1.
    Tensor xd = sum(xproj, {0});  // [B, E]
    Tensor dt = slice(xd, 1, 0, R).contiguous(), Bm = slice(xd, 1, R, R + N).contiguous();
    Tensor Cm = slice(xd, 1, R + N, E).contiguous();
    Tensor delta = linear(dt, dt_w);
    Tensor u = slice(uz, 1, 0, D).contiguous(), z = slice(uz, 1, D, 2 * D).contiguous();
    SelectiveScanOut ref =
        selective_scan(u.view({B, 1, D}), delta.view({B, 1, D}), A, Bm.view({B, 1, N}), Cm.view({B, 1, N}), Dsk,
                       with_z ? z.view({B, 1, D}) : Tensor(), dt_b, true, h0);
    Tensor state = h0.clone(), y = Tensor::zeros({B, D}, DType::F64);
    SsmStepParams p;
    p.B = B;
    p.D = D;
    p.N = N;
    p.R = R;
    p.dtype = DType::F64;
    p.u = uz.data_ptr();
    p.z = with_z ? static_cast<const double*>(uz.data_ptr()) + D : nullptr;
    p.ld = 2 * D;
    p.xproj = xproj.data_ptr();
    p.P = P;
    p.dt_w = dt_w.data_ptr();
    p.dt_bias = dt_b.data_ptr();
    p.A = A.data_ptr();
    p.D_skip = Dsk.data_ptr();
    p.state = state.data_ptr();
    p.y = y.data_ptr();
    ssm_step_cpu(p);
    expect_near(y, ref.y.view({B, D}), 1e-12, "y");
    expect_near(state, ref.last_state, 1e-12, "state");
  }
}

TEST(SsmStep, RowModeEqualsConvXProjAndTheScanOfOneStep) {
  NoGradGuard ng;
  const int64_t B = 3, D = 7, N = 4, R = 2, E = R + 2 * N;
  for (int64_t K : {1, 2, 4}) {
    for (bool with_conv : {true, false}) {
      Tensor xz = randn({B, 2 * D}, 40), cw = randn({D, K}, 41, DType::F64, 0.5), cb = randn({D}, 42);
      Tensor s0 = randn({B, K - 1, D}, 43), xw = randn({E, D}, 44, DType::F64, 0.4);
      Tensor dt_w = randn({D, R}, 45, DType::F64, 0.5), dt_b = randn({D}, 46);
      Tensor A = neg(exp(randn({D, N}, 47))), Dsk = randn({D}, 48), h0 = randn({B, D, N}, 49);
      // Reference: causal_conv1d with the state (L = 1), x_proj, dt_proj, the scan.
      Tensor x = slice(xz, 1, 0, D).contiguous(), z = slice(xz, 1, D, 2 * D).contiguous();
      Tensor u = x;
      CausalConv1dOut conv;
      if (with_conv) {
        conv = causal_conv1d(x.view({B, 1, D}), cw, cb, K > 1 ? s0 : Tensor(), true);
        u = conv.y.view({B, D});
      }
      Tensor xd = linear(u, xw);
      Tensor delta = linear(slice(xd, 1, 0, R).contiguous(), dt_w);
      SelectiveScanOut ref = selective_scan(
          u.view({B, 1, D}), delta.view({B, 1, D}), A, slice(xd, 1, R, R + N).contiguous().view({B, 1, N}),
          slice(xd, 1, R + N, E).contiguous().view({B, 1, N}), Dsk, z.view({B, 1, D}), dt_b, true, h0);
      Tensor conv_state = s0.clone(), state = h0.clone(), y = Tensor::zeros({B, D}, DType::F64);
      SsmStepParams p;
      p.B = B;
      p.D = D;
      p.N = N;
      p.R = R;
      p.dtype = DType::F64;
      p.u = xz.data_ptr();
      p.z = static_cast<const double*>(xz.data_ptr()) + D;
      p.ld = 2 * D;
      p.x_proj_w = xw.data_ptr();
      if (with_conv) {
        p.conv_w = cw.data_ptr();
        p.conv_b = cb.data_ptr();
        p.conv_state = K > 1 ? conv_state.data_ptr() : nullptr;
        p.K = K;
      }
      p.dt_w = dt_w.data_ptr();
      p.dt_bias = dt_b.data_ptr();
      p.A = A.data_ptr();
      p.D_skip = Dsk.data_ptr();
      p.state = state.data_ptr();
      p.y = y.data_ptr();
      ssm_step_cpu(p);
      expect_near(y, ref.y.view({B, D}), 1e-12, "y");
      expect_near(state, ref.last_state, 1e-12, "state");
      expect_near(slice(xz, 1, 0, D).contiguous(), u, 1e-13, "u written in place");
      if (with_conv && K > 1) expect_near(conv_state, conv.final_state, 0.0, "conv state");
    }
  }
  // Conv widths past kConvMaxK are refused.
  SsmStepParams bad;
  bad.B = 1;
  bad.D = bad.N = bad.R = bad.ld = 1;
  double buf[64] = {};
  bad.u = buf;
  bad.x_proj_w = bad.conv_w = bad.dt_w = bad.A = buf;
  bad.conv_state = bad.state = bad.y = buf;
  bad.dtype = DType::F64;
  bad.K = kConvMaxK + 1;
  EXPECT_NE(test::error_of([&] { ssm_step_cpu(bad); }).find("conv width"), std::string::npos);
}

namespace {

// The parts of a decode_gemv MixerIn call, in f64, for a reference built from the training ops.
struct MixerCase {
  int64_t B = 3, H = 16, di = 20, K = 4, E = 7;
  bool layernorm = false, with_bias = true;
  Tensor h, res, nw, nb, W, bias, cw, cb, state, xw;
  explicit MixerCase(bool ln) : layernorm(ln) {
    h = randn({B, H}, 20);
    res = randn({B, H}, 21);
    nw = randn({H}, 22);
    nb = layernorm ? randn({H}, 23) : Tensor();
    W = randn({2 * di, H}, 24, DType::F64, 0.3);
    bias = randn({2 * di}, 25);
    cw = randn({di, K}, 26, DType::F64, 0.5);
    cb = randn({di}, 27);
    state = randn({B, K - 1, di}, 28);
    xw = randn({E, di}, 29, DType::F64, 0.3);
  }
};

}  // namespace

TEST(DecodeGemv, MixerInEqualsNormLinearConvAndXProj) {
  NoGradGuard ng;
  for (bool ln : {false, true}) {
    MixerCase c(ln);
    const int64_t B = c.B, H = c.H, di = c.di, K = c.K, E = c.E;
    NormOut n = ln ? layer_norm_residual(c.h, c.res, c.nw, c.nb, 1e-5, DType::F64)
                   : rms_norm_residual(c.h, c.res, c.nw, 1e-5, DType::F64);
    Tensor xz = linear(n.y, c.W, c.bias);
    Tensor x = slice(xz, 1, 0, di).contiguous().view({B, 1, di});
    CausalConv1dOut conv = causal_conv1d(x, c.cw, c.cb, c.state, true);
    Tensor u = conv.y.view({B, di});
    Tensor xproj_ref = linear(u, c.xw);

    Tensor state = c.state.clone(), y = Tensor::zeros({B, 2 * di}, DType::F64);
    Tensor res_out = Tensor::zeros({B, H}, DType::F64);
    const int64_t P = decode_xproj_partials(di);
    Tensor xproj = Tensor::zeros({P, B, E}, DType::F64);
    DecodeGemvParams p;
    p.B = B;
    p.in = H;
    p.out = 2 * di;
    p.dtype = DType::F64;
    p.W = c.W.data_ptr();
    p.bias = c.bias.data_ptr();
    p.input = DecodeInput::Norm;
    p.norm.h = c.h.data_ptr();
    p.norm.residual_in = c.res.data_ptr();
    p.norm.residual_out = res_out.data_ptr();
    p.norm.weight = c.nw.data_ptr();
    p.norm.bias = ln ? c.nb.data_ptr() : nullptr;
    p.norm.rms = !ln;
    p.norm.eps = 1e-5;
    p.output = DecodeOutput::MixerIn;
    p.y = y.data_ptr();
    p.d_inner = di;
    p.K = K;
    p.E = E;
    p.conv_w = c.cw.data_ptr();
    p.conv_b = c.cb.data_ptr();
    p.conv_state = state.data_ptr();
    p.x_proj_w = c.xw.data_ptr();
    p.xproj = xproj.data_ptr();
    decode_gemv_cpu(p);
    expect_near(res_out, n.residual, 0.0, "residual");
    expect_near(slice(y, 1, 0, di).contiguous(), u, 1e-12, "u");
    expect_near(slice(y, 1, di, 2 * di).contiguous(), slice(xz, 1, di, 2 * di).contiguous(), 1e-12, "z");
    expect_near(state, conv.final_state, 1e-12, "conv state");
    // Partial p covers channels [16p, 16p + 16); their sum is x_proj's output.
    ASSERT_EQ(P, 2);
    expect_near(sum(xproj, {0}), xproj_ref, 1e-12, "x_proj");
    Tensor first = linear(slice(u, 1, 0, 16).contiguous(), slice(c.xw, 1, 0, 16).contiguous());
    expect_near(slice(xproj, 0, 0, 1).contiguous().view({B, E}), first, 1e-12, "partial 0");
  }
}

TEST(DecodeGemv, EmbeddingInputStoreOutputAndTheStepCounter) {
  NoGradGuard ng;
  const int64_t B = 2, H = 8, V = 11, O = 5;
  Tensor emb = randn({V, H}, 30), nw = randn({H}, 31), W = randn({O, H}, 32);
  std::vector<int64_t> tokens = {7, 2};
  int64_t counter = 4;
  Tensor y = Tensor::zeros({B, O}, DType::F64), res_out = Tensor::zeros({B, H}, DType::F64);
  DecodeGemvParams p;
  p.B = B;
  p.in = H;
  p.out = O;
  p.dtype = DType::F64;
  p.W = W.data_ptr();
  p.input = DecodeInput::EmbedNorm;
  p.norm.embedding = emb.data_ptr();
  p.norm.tokens = tokens.data();
  p.norm.step_counter = &counter;
  p.norm.residual_out = res_out.data_ptr();
  p.norm.weight = nw.data_ptr();
  p.output = DecodeOutput::Store;
  p.y = y.data_ptr();
  decode_gemv_cpu(p);
  EXPECT_EQ(counter, 5);
  Tensor rows = Tensor::from_vector_i64(tokens, {B});
  Tensor e = embedding(emb, rows);
  expect_near(res_out, e, 0.0, "residual = embedding rows");
  expect_near(y, linear(rms_norm(e, nw, 1e-5), W), 1e-12, "y");
  // decode_norm is the input stage alone.
  Tensor xin = Tensor::zeros({B, H}, DType::F64);
  DecodeNormParams np;
  np.B = B;
  np.H = H;
  np.dtype = DType::F64;
  np.input = DecodeInput::EmbedNorm;
  np.norm = p.norm;
  np.norm.residual_out = nullptr;
  np.y = xin.data_ptr();
  decode_norm_cpu(np);
  EXPECT_EQ(counter, 6);
  expect_near(xin, rms_norm(e, nw, 1e-5), 1e-13, "decode_norm");
}

TEST(DecodeGemv, HalfStorageRoundsWhereTheModelStores) {
  // bf16 storage: y is the rounding of the f32 computation of the same (bf16-valued) inputs.
  NoGradGuard ng;
  const int64_t B = 2, H = 16, O = 9;
  Tensor x = randn({B, H}, 40, DType::BF16), W = randn({O, H}, 41, DType::BF16, 0.3);
  Tensor y = Tensor::zeros({B, O}, DType::BF16), y32 = Tensor::zeros({B, O}, DType::F32);
  DecodeGemvParams p;
  p.B = B;
  p.in = H;
  p.out = O;
  p.dtype = DType::BF16;
  p.W = W.data_ptr();
  p.input = DecodeInput::Plain;
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  decode_gemv_cpu(p);
  p.y = y32.data_ptr();
  p.y_compute = true;
  decode_gemv_cpu(p);
  expect_near(y32, linear(x.to(DType::F32), W.to(DType::F32)), 1e-6, "f32 result");
  expect_near(y, y32.to(DType::BF16), 0.0, "bf16 = rounded f32");
}

// The decode kernels' op table entries (tests/ops/op_table.h): kernels without an autograd op, each with checks
// of its own. CPU: decode_gemv and ssm_step against the training ops they shorten (norms, linear, causal_conv1d and
// selective_scan with L = 1), sampling on hand-made logits. CUDA: each kernel against the CPU kernel on the same
// inputs in every dtype (CPU references with the same storage roundings); outputs start as NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/dispatch.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/shape_ops.h"
#include "kernels/decode_gemv.h"
#include "kernels/detail/decode_math.h"
#include "kernels/sampling.h"
#include "kernels/ssm_step.h"
#include "tests/ops/op_table.h"
#include "tests/test_util.h"

namespace mt::test {

namespace {

using namespace mt::kernels;

// Runs each check in turn, its name in the failure messages.
#define NAMED_CHECK(f) \
  { #f, &f }

void run_checks(const std::vector<std::pair<const char*, void (*)()>>& checks) {
  for (const auto& c : checks) {
    SCOPED_TRACE(c.first);
    c.second();
  }
}

// got == want within tol * (1 + |want|) per element; tol 0: exactly.
void expect_near(const Tensor& got, const Tensor& want, double tol, const char* what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(got.shape(), want.shape());
  if (tol == 0.0) {
    EXPECT_EQ(got.to_vector(), want.to_vector());
  } else {
    EXPECT_CLOSE(got, want, tol, tol);
  }
}

// The CUDA checks run a kernel on the same named buffers on the GPU and on the CPU.
using Bufs = std::map<std::string, Tensor>;

// Copies of the host buffers `host` (inputs; outputs filled with NaN) on dev, `call` runs the kernel on them; returns
// the buffers after the call, on the host.
Bufs run_on(Device dev, const Bufs& host, const std::function<void(Bufs&, bool cuda)>& call) {
  Bufs b;
  for (const auto& kv : host) b[kv.first] = kv.second.to(dev).clone();
  call(b, dev.is_cuda());
  Bufs out;
  for (const auto& kv : b) out[kv.first] = kv.second.to(Device::cpu());
  return out;
}

Tensor rnd(const Shape& s, uint64_t seed, DType dt, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F32).to(dt);
}
Tensor nan_of(const Shape& s, DType dt) { return Tensor::full(s, NAN, dt); }

double atol_of(DType dt) { return dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-5 : 2e-2; }

// Every buffer named in `names`: GPU vs CPU within the dtype's tolerance times `widen` (NaN never passes).
void compare(const Bufs& gpu, const Bufs& cpu, const std::vector<std::string>& names, DType dt, const std::string& what,
             double widen = 1.0) {
  for (const std::string& n : names) {
    const std::vector<double> a = gpu.at(n).to_vector(), b = cpu.at(n).to_vector();
    const DType bdt = gpu.at(n).dtype();
    const double tol = widen * (bdt == DType::F32 && is_half(dt) ? 5e-3 : atol_of(is_half(bdt) ? bdt : dt));
    EXPECT_LE(tolerance_ratio(a, b, tol, tol), 1.0) << what << ": " << n << " (" << dtype_name(dt) << ")";
  }
}

const DType kDtypes[] = {DType::F32, DType::BF16, DType::F16};

// ------------------------------------------------------------------------------------------------ decode_gemv

// The parts of a decode_gemv MixerIn call, in f64, for a reference built from the training ops.
struct MixerCase {
  int64_t B = 3, H = 16, di = 20, K = 4, E = 7;
  bool layernorm = false, with_bias = true;
  Tensor h, res, nw, nb, W, bias, cw, cb, state, xw;
  explicit MixerCase(bool ln) : layernorm(ln) {
    h = randn64({B, H}, 20);
    res = randn64({B, H}, 21);
    nw = randn64({H}, 22);
    nb = layernorm ? randn64({H}, 23) : Tensor();
    W = randn64({2 * di, H}, 24, 0.3);
    bias = randn64({2 * di}, 25);
    cw = randn64({di, K}, 26, 0.5);
    cb = randn64({di}, 27);
    state = randn64({B, K - 1, di}, 28);
    xw = randn64({E, di}, 29, 0.3);
  }
};

void mixer_in_equals_norm_linear_conv_and_x_proj() {
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

void embedding_input_store_output_and_the_step_counter() {
  NoGradGuard ng;
  const int64_t B = 2, H = 8, V = 11, O = 5;
  Tensor emb = randn64({V, H}, 30), nw = randn64({H}, 31), W = randn64({O, H}, 32);
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

void half_storage_rounds_where_the_model_stores() {
  // bf16 storage: y is the rounding of the f32 computation of the same (bf16-valued) inputs.
  NoGradGuard ng;
  const int64_t B = 2, H = 16, O = 9;
  Tensor x = randn64({B, H}, 40).to(DType::BF16), W = randn64({O, H}, 41, 0.3).to(DType::BF16);
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

// A decode_gemv MixerIn / Store case: widths that cross the kernel's 16-row blocks (d_inner % 16 = 8, so one block
// holds x and z rows) and its 4-vector stages (in > 32 * 4 * 8 elements for 16-bit types).
struct GemvCase {
  int64_t B, in, di, K = 4, E = 11;
  DType dt;
  bool layernorm, embed;
  Bufs host() const {
    const DType sd = DType::F32;
    Bufs h{{"x", rnd({B, in}, 20, dt)},
           {"emb", rnd({50, in}, 21, dt)},
           {"res_in", rnd({B, in}, 22, sd)},
           {"res_out", nan_of({B, in}, sd)},
           {"nw", rnd({in}, 23, sd)},
           {"nb", rnd({in}, 24, sd)},
           {"W", rnd({2 * di, in}, 25, dt, 1.0 / std::sqrt(static_cast<double>(in)))},
           {"bias", rnd({2 * di}, 26, dt)},
           {"cw", rnd({di, K}, 27, dt, 0.5)},
           {"cb", rnd({di}, 28, dt)},
           {"state", rnd({B, K - 1, di}, 29, dt)},
           {"xw", rnd({E, di}, 30, dt, 0.3)},
           {"xproj", nan_of({decode_xproj_partials(di), B, E}, sd)},
           {"y", nan_of({B, 2 * di}, dt)},
           {"step", Tensor::from_vector_i64({7}, {1})}};
    std::vector<int64_t> toks;
    for (int64_t b = 0; b < B; ++b) toks.push_back((b * 13 + 5) % 50);
    h["tokens"] = Tensor::from_vector_i64(toks, {B});
    return h;
  }
  void call(Bufs& b, bool cuda) const {
    DecodeGemvParams p;
    p.B = B;
    p.in = in;
    p.out = 2 * di;
    p.dtype = dt;
    p.W = b["W"].data_ptr();
    p.bias = b["bias"].data_ptr();
    p.input = embed ? DecodeInput::EmbedNorm : DecodeInput::Norm;
    p.norm.h = b["x"].data_ptr();
    p.norm.embedding = b["emb"].data_ptr();
    p.norm.tokens = b["tokens"].data<int64_t>();
    p.norm.step_counter = b["step"].data<int64_t>();
    p.norm.residual_in = embed ? nullptr : b["res_in"].data_ptr();
    p.norm.residual_out = b["res_out"].data_ptr();
    p.norm.round_residual = is_half(dt);
    p.norm.weight = b["nw"].data_ptr();
    p.norm.bias = layernorm ? b["nb"].data_ptr() : nullptr;
    p.norm.rms = !layernorm;
    p.output = DecodeOutput::MixerIn;
    p.y = b["y"].data_ptr();
    p.d_inner = di;
    p.K = K;
    p.E = E;
    p.conv_w = b["cw"].data_ptr();
    p.conv_b = b["cb"].data_ptr();
    p.conv_state = b["state"].data_ptr();
    p.x_proj_w = b["xw"].data_ptr();
    p.xproj = b["xproj"].data_ptr();
    cuda ? ops::run_cuda("decode_gemv", MT_CUDA_KERNEL(decode_gemv_cuda), p) : decode_gemv_cpu(p);
  }
};

void mixer_in_matches_the_cpu() {
  for (DType dt : kDtypes)
    for (int64_t B : {1, 2, 3, 5, 8})
      for (int variant = 0; variant < 3; ++variant) {
        GemvCase c{B, variant == 2 ? (dt == DType::F32 ? 528 : 1040) : 48, 40, 4, 11, dt, variant == 1, variant == 0};
        const Bufs h = c.host();
        auto call = [&](Bufs& b, bool cuda) { c.call(b, cuda); };
        const Bufs g = run_on(Device::cuda(), h, call), r = run_on(Device::cpu(), h, call);
        const std::string what = "decode_gemv B " + std::to_string(B) + " in " + std::to_string(c.in) + " variant " +
                                 std::to_string(variant);
        compare(g, r, {"y", "state", "res_out", "xproj"}, dt, what);
        EXPECT_EQ(g.at("step").to_vector_i64()[0], c.embed ? 8 : 7) << what;
      }
}

void store_and_decode_norm_match_the_cpu() {
  for (DType dt : kDtypes)
    for (int64_t B : {1, 4, 7}) {
      const int64_t in = 64, out = 1000;  // out: a partial last block of rows
      Bufs h{{"x", rnd({B, in}, 40, dt)},           {"W", rnd({out, in}, 41, dt, 0.125)},
             {"bias", rnd({out}, 42, dt)},          {"y", nan_of({B, out}, dt)},
             {"y32", nan_of({B, out}, DType::F32)}, {"res", rnd({B, in}, 43, DType::F32)},
             {"nw", rnd({in}, 44, DType::F32)},     {"xin", nan_of({B, in}, dt)}};
      auto call = [&](Bufs& b, bool cuda) {
        DecodeGemvParams p;
        p.B = B;
        p.in = in;
        p.out = out;
        p.dtype = dt;
        p.W = b["W"].data_ptr();
        p.bias = b["bias"].data_ptr();
        p.input = DecodeInput::Plain;
        p.x = b["x"].data_ptr();
        p.y = b["y"].data_ptr();
        cuda ? ops::run_cuda("decode_gemv", MT_CUDA_KERNEL(decode_gemv_cuda), p) : decode_gemv_cpu(p);
        p.bias = nullptr;
        p.input = DecodeInput::Norm;
        p.norm.h = b["x"].data_ptr();
        p.norm.residual_in = b["res"].data_ptr();
        p.norm.weight = b["nw"].data_ptr();
        p.y = b["y32"].data_ptr();
        p.y_compute = true;
        cuda ? ops::run_cuda("decode_gemv", MT_CUDA_KERNEL(decode_gemv_cuda), p) : decode_gemv_cpu(p);
        DecodeNormParams np;
        np.B = B;
        np.H = in;
        np.dtype = dt;
        np.input = DecodeInput::Norm;
        np.norm = p.norm;
        np.y = b["xin"].data_ptr();
        cuda ? ops::run_cuda("decode_gemv", MT_CUDA_KERNEL(decode_norm_cuda), np) : decode_norm_cpu(np);
      };
      compare(run_on(Device::cuda(), h, call), run_on(Device::cpu(), h, call), {"y", "y32", "xin"}, dt,
              "decode_gemv store / decode_norm B " + std::to_string(B));
    }
}

// ------------------------------------------------------------------------------------------------ sampling

struct Options {
  float temperature = 1.0f;
  int64_t top_k = 0;
  double top_p = 1.0;
  float penalty = 1.0f;
  uint64_t seed = 0;
  int64_t step = 0;
};

// Draw one token for each of `rows` copies of `logits` (row ids first_row, first_row + 1, ...).
std::vector<int64_t> draw(const std::vector<float>& logits, int64_t rows, const Options& o,
                          std::vector<uint32_t>* seen = nullptr, int64_t first_row = 0,
                          std::vector<int64_t>* history = nullptr, int64_t history_len = 0) {
  const int64_t V = static_cast<int64_t>(logits.size());
  std::vector<float> all;
  for (int64_t r = 0; r < rows; ++r) all.insert(all.end(), logits.begin(), logits.end());
  std::vector<int64_t> row_ids(static_cast<size_t>(rows)), tokens(static_cast<size_t>(rows), -1);
  for (int64_t r = 0; r < rows; ++r) row_ids[r] = first_row + r;
  SampleParams p;
  p.B = rows;
  p.V = V;
  p.logits = all.data();
  p.seen = seen ? seen->data() : nullptr;
  p.seen_words = (V + 31) / 32;
  p.temperature = o.temperature;
  p.top_k = o.top_k;
  p.top_p = o.top_p;
  p.repetition_penalty = o.penalty;
  p.seed = o.seed;
  p.row_ids = row_ids.data();
  p.step = &o.step;
  p.tokens = tokens.data();
  p.history = history ? history->data() : nullptr;
  p.history_len = history_len;
  sample_cpu(p);
  return tokens;
}

std::map<int64_t, int64_t> histogram(const std::vector<int64_t>& t) {
  std::map<int64_t, int64_t> h;
  for (int64_t v : t) ++h[v];
  return h;
}

void greedy_takes_the_first_largest_logit_and_never_a_nan() {
  Options g;
  g.temperature = 0.0f;
  EXPECT_EQ(draw({0.5f, 3.0f, -1.0f, 3.0f}, 1, g)[0], 1);
  EXPECT_EQ(draw({-INFINITY, -5.0f, -INFINITY}, 1, g)[0], 1);
  EXPECT_EQ(draw({NAN, -100.0f, NAN}, 1, g)[0], 1);
  EXPECT_EQ(draw({NAN, NAN}, 1, g)[0], 0);
  EXPECT_EQ(draw({1.0f, INFINITY, 2.0f}, 1, g)[0], 1);
}

void repetition_penalty_divides_positive_and_multiplies_negative_logits() {
  Options g;
  g.temperature = 0.0f;
  g.penalty = 2.0f;
  // Token 0 seen: 3.0 / 2 = 1.5 < 2.0, so token 1 wins.
  std::vector<uint32_t> seen = {1u};
  EXPECT_EQ(draw({3.0f, 2.0f, -1.0f}, 1, g, &seen)[0], 1);
  // Token 0 seen with a negative logit: -1 * 2 = -2 < -1.5.
  seen = {1u};
  EXPECT_EQ(draw({-1.0f, -1.5f}, 1, g, &seen)[0], 1);
  // The chosen token is marked as seen.
  EXPECT_EQ(seen[0], 3u);
  // A penalty below 1 favours seen tokens.
  g.penalty = 0.25f;
  seen = {2u};
  EXPECT_EQ(draw({3.0f, 1.0f}, 1, g, &seen)[0], 1);
  // Token ids past 31 live in the next word of the mask.
  std::vector<float> wide(40, 0.0f);
  wide[35] = 5.0f;
  wide[3] = 4.0f;
  seen = {0u, 1u << 3};
  g.penalty = 4.0f;
  EXPECT_EQ(draw(wide, 1, g, &seen)[0], 3);
}

void the_draw_walks_the_weights_in_id_order() {
  // Two equal logits weigh 2^31 each: the token is 1 exactly when u * 2^32 >= 2^31, i.e. u >= 0.5.
  Options o;
  o.seed = 1234;
  for (int64_t step = 0; step < 8; ++step) {
    o.step = step;
    const std::vector<int64_t> t = draw({0.25f, 0.25f}, 16, o);
    for (int64_t r = 0; r < 16; ++r) {
      const float u = decode::sample_uniform(o.seed, step, r);
      EXPECT_EQ(t[r], u >= 0.5f ? 1 : 0) << "step " << step << " row " << r << " u " << u;
    }
  }
}

void frequencies_follow_the_softmax_and_the_temperature() {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const int64_t n = 20000;
  Options o;
  o.seed = 7;
  auto h = histogram(draw(logits, n, o));
  EXPECT_NEAR(h[0] / double(n), 0.5, 0.015);
  EXPECT_NEAR(h[1] / double(n), 0.3, 0.015);
  EXPECT_NEAR(h[2] / double(n), 0.2, 0.015);
  // Temperature 2: probabilities proportional to sqrt(p).
  o.temperature = 2.0f;
  h = histogram(draw(logits, n, o));
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.2);
  EXPECT_NEAR(h[0] / double(n), std::sqrt(0.5) / z, 0.015);
  EXPECT_NEAR(h[2] / double(n), std::sqrt(0.2) / z, 0.015);
  // A very low temperature is greedy in effect.
  o.temperature = 0.01f;
  h = histogram(draw(logits, 2000, o));
  EXPECT_EQ(h[0], 2000);
}

void top_k_keeps_the_k_largest_and_every_tie_at_the_boundary() {
  Options o;
  o.seed = 3;
  o.top_k = 2;
  auto h = histogram(draw({1.0f, 3.0f, 2.0f, 0.0f, 2.5f}, 4000, o));
  EXPECT_EQ(h.count(0) + h.count(2) + h.count(3), 0u);
  EXPECT_GT(h[1], 0);
  EXPECT_GT(h[4], 0);
  EXPECT_NEAR(h[1] / 4000.0, 1.0 / (1.0 + std::exp(-0.5)), 0.03);
  // Ties at the k-th largest logit are all kept.
  h = histogram(draw({3.0f, 2.0f, 2.0f, 0.0f}, 4000, o));
  EXPECT_EQ(h.count(3), 0u);
  EXPECT_GT(h[1], 0);
  EXPECT_GT(h[2], 0);
  // top_k 1 is greedy; top_k >= V is off.
  o.top_k = 1;
  EXPECT_EQ(histogram(draw({1.0f, 3.0f, 2.0f}, 500, o))[1], 500);
  o.top_k = 3;
  EXPECT_EQ(histogram(draw({1.0f, 3.0f, 2.0f}, 2000, o)).size(), 3u);
}

void top_p_keeps_the_smallest_head_reaching_the_mass() {
  const std::vector<float> logits = {std::log(0.05f), std::log(0.5f), std::log(0.15f), std::log(0.3f)};
  Options o;
  o.seed = 11;
  const int64_t n = 6000;
  o.top_p = 0.4;  // 0.5 alone reaches it
  EXPECT_EQ(histogram(draw(logits, n, o))[1], n);
  o.top_p = 0.6;  // 0.5 + 0.3
  auto h = histogram(draw(logits, n, o));
  EXPECT_EQ(h.count(0) + h.count(2), 0u);
  EXPECT_NEAR(h[1] / double(n), 0.5 / 0.8, 0.02);
  o.top_p = 0.9;  // 0.5 + 0.3 + 0.15
  h = histogram(draw(logits, n, o));
  EXPECT_EQ(h.count(0), 0u);
  EXPECT_NEAR(h[2] / double(n), 0.15 / 0.95, 0.02);
  // top-k first, then top-p on what is left: top_k 2 keeps {1, 3}; top_p 0.7 of 0.8 needs both.
  o.top_k = 2;
  o.top_p = 0.7;
  h = histogram(draw(logits, n, o));
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[3], 0);
  // top_k 2 with top_p 0.5: 0.5 / 0.8 = 0.625 >= 0.5 keeps token 1 alone.
  o.top_p = 0.5;
  EXPECT_EQ(histogram(draw(logits, n, o))[1], n);
}

void draws_are_reproducible_and_depend_on_seed_row_and_step_only() {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(0.7f * static_cast<float>(i));
  Options o;
  o.seed = 99;
  o.step = 5;
  const auto a = draw(logits, 64, o);
  EXPECT_EQ(draw(logits, 64, o), a);
  // The same row ids in a different batch (rows 10..19 alone) draw the same tokens.
  const auto part = draw(logits, 10, o, nullptr, 10);
  EXPECT_EQ(part, std::vector<int64_t>(a.begin() + 10, a.begin() + 20));
  // Another seed or step changes the draws.
  Options o2 = o;
  o2.seed = 100;
  EXPECT_NE(draw(logits, 64, o2), a);
  o2 = o;
  o2.step = 6;
  EXPECT_NE(draw(logits, 64, o2), a);
}

void writes_the_history_column_of_the_step() {
  Options o;
  o.temperature = 0.0f;
  o.step = 2;
  std::vector<int64_t> hist(2 * 4, -1);
  draw({0.0f, 1.0f, 0.5f}, 2, o, nullptr, 0, &hist, 4);
  EXPECT_EQ(hist, (std::vector<int64_t>{-1, -1, 1, -1, -1, -1, 1, -1}));
  o.step = 4;  // past the end: nothing written
  draw({0.0f, 1.0f, 0.5f}, 2, o, nullptr, 0, &hist, 4);
  EXPECT_EQ(hist[3], -1);
}

void out_of_range_options_are_usage_errors() {
  auto code = [](double t, int64_t k, double p, double r) {
    try {
      sample_check_options(t, k, p, r);
    } catch (const Error& e) {
      return e.exit_code();
    }
    return 0;
  };
  EXPECT_EQ(code(0.0, 0, 1.0, 1.0), 0);
  EXPECT_EQ(code(-1.0, 0, 1.0, 1.0), 2);
  EXPECT_EQ(code(NAN, 0, 1.0, 1.0), 2);
  EXPECT_EQ(code(1.0, -1, 1.0, 1.0), 2);
  EXPECT_EQ(code(1.0, 0, 0.0, 1.0), 2);
  EXPECT_EQ(code(1.0, 0, 1.5, 1.0), 2);
  EXPECT_EQ(code(1.0, 0, 1.0, 0.0), 2);
  EXPECT_EQ(code(1.0, 0, 1.0, INFINITY), 2);
  EXPECT_NE(error_of([] { sample_check_options(1.0, 0, 2.0, 1.0); }).find("top-p"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------ ssm_step

// An f64 ssm_step on the CPU, the fields both modes share: u / z rows of width 2 D in uz, dt_proj, A, D, the state
// and the output.
SsmStepParams f64_step(int64_t B, int64_t D, int64_t N, int64_t R, const Tensor& uz, bool with_z, const Tensor& dt_w,
                       const Tensor& dt_b, const Tensor& A, const Tensor& Dsk, Tensor& state, Tensor& y) {
  SsmStepParams p;
  p.B = B;
  p.D = D;
  p.N = N;
  p.R = R;
  p.dtype = DType::F64;
  p.u = uz.data_ptr();
  p.z = with_z ? static_cast<const double*>(uz.data_ptr()) + D : nullptr;
  p.ld = 2 * D;
  p.dt_w = dt_w.data_ptr();
  p.dt_bias = dt_b.data_ptr();
  p.A = A.data_ptr();
  p.D_skip = Dsk.data_ptr();
  p.state = state.data_ptr();
  p.y = y.data_ptr();
  return p;
}

void equals_selective_scan_of_one_step_with_the_state() {
  NoGradGuard ng;
  const int64_t B = 2, D = 6, N = 4, R = 3, E = R + 2 * N, P = 3;
  for (bool with_z : {false, true}) {
    Tensor uz = randn64({B, 2 * D}, 10);
    Tensor xproj = randn64({P, B, E}, 11, 0.5);
    Tensor dt_w = randn64({D, R}, 12, 0.5), dt_b = randn64({D}, 13);
    Tensor A = neg(exp(randn64({D, N}, 14))), Dsk = randn64({D}, 15);
    Tensor h0 = randn64({B, D, N}, 16);
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
    SsmStepParams p = f64_step(B, D, N, R, uz, with_z, dt_w, dt_b, A, Dsk, state, y);
    p.xproj = xproj.data_ptr();
    p.P = P;
    ssm_step_cpu(p);
    expect_near(y, ref.y.view({B, D}), 1e-12, "y");
    expect_near(state, ref.last_state, 1e-12, "state");
  }
}

void row_mode_equals_conv_x_proj_and_the_scan_of_one_step() {
  NoGradGuard ng;
  const int64_t B = 3, D = 7, N = 4, R = 2, E = R + 2 * N;
  for (int64_t K : {1, 2, 4}) {
    for (bool with_conv : {true, false}) {
      Tensor xz = randn64({B, 2 * D}, 40), cw = randn64({D, K}, 41, 0.5), cb = randn64({D}, 42);
      Tensor s0 = randn64({B, K - 1, D}, 43), xw = randn64({E, D}, 44, 0.4);
      Tensor dt_w = randn64({D, R}, 45, 0.5), dt_b = randn64({D}, 46);
      Tensor A = neg(exp(randn64({D, N}, 47))), Dsk = randn64({D}, 48), h0 = randn64({B, D, N}, 49);
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
      SsmStepParams p = f64_step(B, D, N, R, xz, /*with_z=*/true, dt_w, dt_b, A, Dsk, state, y);
      p.x_proj_w = xw.data_ptr();
      if (with_conv) {
        p.conv_w = cw.data_ptr();
        p.conv_b = cb.data_ptr();
        p.conv_state = K > 1 ? conv_state.data_ptr() : nullptr;
        p.K = K;
      }
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
  EXPECT_NE(error_of([&] { ssm_step_cpu(bad); }).find("conv width"), std::string::npos);
}

}  // namespace

void decode_gemv_cpu_check() {
  run_checks({NAMED_CHECK(mixer_in_equals_norm_linear_conv_and_x_proj),
              NAMED_CHECK(embedding_input_store_output_and_the_step_counter),
              NAMED_CHECK(half_storage_rounds_where_the_model_stores)});
}

void decode_gemv_cuda_check() {
  run_checks({NAMED_CHECK(mixer_in_matches_the_cpu), NAMED_CHECK(store_and_decode_norm_match_the_cpu)});
}

void sampling_cpu_check() {
  run_checks({NAMED_CHECK(greedy_takes_the_first_largest_logit_and_never_a_nan),
              NAMED_CHECK(repetition_penalty_divides_positive_and_multiplies_negative_logits),
              NAMED_CHECK(the_draw_walks_the_weights_in_id_order),
              NAMED_CHECK(frequencies_follow_the_softmax_and_the_temperature),
              NAMED_CHECK(top_k_keeps_the_k_largest_and_every_tie_at_the_boundary),
              NAMED_CHECK(top_p_keeps_the_smallest_head_reaching_the_mass),
              NAMED_CHECK(draws_are_reproducible_and_depend_on_seed_row_and_step_only),
              NAMED_CHECK(writes_the_history_column_of_the_step), NAMED_CHECK(out_of_range_options_are_usage_errors)});
}

void sampling_cuda_check() {
  const int64_t B = 6, V = 50280, W = (V + 31) / 32;
  struct Opt {
    float t;
    int64_t k;
    double p;
    float r;
  };
  for (const Opt& o :
       {Opt{0.0f, 0, 1.0, 1.0f}, Opt{0.0f, 0, 1.0, 1.3f}, Opt{1.0f, 0, 1.0, 1.0f}, Opt{0.8f, 40, 1.0, 1.0f},
        Opt{1.2f, 0, 0.9, 1.0f}, Opt{0.7f, 50, 0.8, 1.2f}, Opt{1.0f, 1, 1.0, 1.0f}})
    for (int64_t step = 0; step < 3; ++step) {
      std::vector<double> seen_words(static_cast<size_t>(B * W));
      for (size_t i = 0; i < seen_words.size(); ++i) seen_words[i] = static_cast<double>((i * 2654435761u) % 4096);
      Tensor logits = rnd({B, V}, 50 + step, DType::F32, 3.0);
      if (step == 1) {  // row 2's largest logit at two ids far apart (greedy's slices): the smaller id wins
        std::vector<double> lv = logits.to_vector();
        lv[static_cast<size_t>(2 * V + 7)] = lv[static_cast<size_t>(2 * V + 40000)] = 50.0;
        logits = Tensor::from_vector(lv, {B, V}, DType::F32);
      }
      if (step == 2 && o.t == 0.0f) {  // greedy: a tie within one thread's logits, and NaNs
        std::vector<double> lv = logits.to_vector();
        lv[static_cast<size_t>(3 * V + 300)] = lv[static_cast<size_t>(3 * V + 556)] = 60.0;  // ids 256 apart
        for (int64_t v : {0, 1, 5000, 300}) lv[static_cast<size_t>(5 * V + v)] = NAN;
        logits = Tensor::from_vector(lv, {B, V}, DType::F32);
      }
      Bufs h{{"logits", logits},
             {"seen", Tensor::from_vector(seen_words, {B, W}, DType::I32)},
             {"rows", Tensor::from_vector_i64({3, 1, 4, 1, 5, 9}, {B})},
             {"step", Tensor::from_vector_i64({step}, {1})},
             {"tokens", Tensor::full({B}, -1, DType::I64)},
             {"hist", Tensor::full({B, 4}, -1, DType::I64)},
             {"scratch", Tensor::zeros({B, 2 * V}, DType::I32)}};
      auto call = [&](Bufs& b, bool cuda) {
        SampleParams p;
        p.B = B;
        p.V = V;
        p.logits = b["logits"].data<float>();
        p.seen = static_cast<uint32_t*>(b["seen"].data_ptr());
        p.seen_words = W;
        p.temperature = o.t;
        p.top_k = o.k;
        p.top_p = o.p;
        p.repetition_penalty = o.r;
        p.seed = 77;
        p.row_ids = b["rows"].data<int64_t>();
        p.step = b["step"].data<int64_t>();
        p.tokens = b["tokens"].data<int64_t>();
        p.history = b["hist"].data<int64_t>();
        p.history_len = 4;
        p.scratch = static_cast<uint32_t*>(b["scratch"].data_ptr());
        cuda ? ops::run_cuda("sampling", MT_CUDA_KERNEL(sample_cuda), p) : sample_cpu(p);
        // Greedy without the penalty (the first call's token is then in `seen`, which moves nothing): a second call
        // on the same scratch, the tokens cleared first, gives them again (greedy_kernel's count is reset).
        if (cuda && o.t == 0.0f && o.r == 1.0f) {
          b["tokens"].fill_(-1);
          ops::run_cuda("sampling", MT_CUDA_KERNEL(sample_cuda), p);
        }
      };
      const Bufs g = run_on(Device::cuda(), h, call), r = run_on(Device::cpu(), h, call);
      const std::string what = "t " + std::to_string(o.t) + " k " + std::to_string(o.k) + " p " + std::to_string(o.p) +
                               " r " + std::to_string(o.r) + " step " + std::to_string(step);
      EXPECT_EQ(g.at("tokens").to_vector_i64(), r.at("tokens").to_vector_i64()) << what;
      if (step == 1 && o.t == 0.0f && o.r == 1.0f) {
        EXPECT_EQ(r.at("tokens").to_vector_i64()[2], 7) << what;
      }
      if (step == 2 && o.t == 0.0f && o.r == 1.0f) {
        EXPECT_EQ(r.at("tokens").to_vector_i64()[3], 300) << what;
        const std::vector<double> lv = logits.to_vector();
        EXPECT_FALSE(std::isnan(lv[static_cast<size_t>(5 * V + r.at("tokens").to_vector_i64()[5])])) << what;
      }
      EXPECT_EQ(g.at("hist").to_vector_i64(), r.at("hist").to_vector_i64()) << what;
      EXPECT_EQ(g.at("seen").to_vector_i64(), r.at("seen").to_vector_i64()) << what;
    }
}

void ssm_step_cpu_check() {
  run_checks({NAMED_CHECK(equals_selective_scan_of_one_step_with_the_state),
              NAMED_CHECK(row_mode_equals_conv_x_proj_and_the_scan_of_one_step)});
}

void ssm_step_cuda_check() {
  // The second shape has enough rows for the update's 4-threads-per-channel blocks, and N and R past what a thread
  // holds in registers. dt_proj's weights shrink with R so that delta keeps its spread. Over its 180k outputs the
  // largest f32 difference reaches about 2.2e-4 on the H100, in the one-block-per-row kernel as in the others
  // (exp(delta A) amplifies last-bit differences), so its tolerances are 50x (f32) and 4x (16-bit) the first's;
  // a wrong index or a missed state is off by far more.
  struct Sizes {
    int64_t B, D, N, R;
  };
  // The third and fourth take the update for many rows in row mode with xrow (partial tiles of rows and of channels):
  // N = 16 fills every thread's 4 states, N = 10 leaves the third thread of a channel 2 and the fourth none.
  for (const Sizes& sz :
       {Sizes{3, 300, 16, 5}, Sizes{600, 300, 40, 70}, Sizes{90, 300, 16, 12}, Sizes{200, 140, 10, 7}})
    for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
      const DType sd = dt == DType::F64 ? DType::F64 : DType::F32;
      const int64_t B = sz.B, D = sz.D, N = sz.N, R = sz.R, E = R + 2 * N, P = 7, K = 4;
      Tensor A = rnd({D, N}, 14, sd).to(DType::F64);
      std::vector<double> av = A.to_vector();
      for (double& a : av) a = -std::exp(a);
      Bufs h{{"uz", rnd({B, 2 * D}, 10, dt)},
             {"xproj", rnd({P, B, E}, 11, sd, 0.3)},
             {"xw", rnd({E, D}, 17, dt, 0.1)},
             {"cw", rnd({D, K}, 18, dt, 0.5)},
             {"cb", rnd({D}, 19, dt)},
             {"cstate", rnd({B, K - 1, D}, 20, dt)},
             {"dt_w", rnd({D, R}, 12, dt, 0.5 * std::sqrt(5.0 / static_cast<double>(R)))},
             {"dt_b", rnd({D}, 13, sd)},
             {"A", Tensor::from_vector(av, {D, N}, sd)},
             {"D", rnd({D}, 15, sd)},
             {"state", rnd({B, D, N}, 16, sd)},
             {"y", nan_of({B, D}, dt)},
             {"xrow", nan_of({B, E}, sd)}};
      // Modes: partials with and without z, row mode with and without the conv, in one block per row (2, 3) and as
      // the conv step, a GEMM into the xrow scratch and the update (4, 5).
      for (int mode = 0; mode < 6; ++mode) {
        auto call = [&](Bufs& b, bool cuda) {
          SsmStepParams p;
          p.B = B;
          p.D = D;
          p.N = N;
          p.R = R;
          p.dtype = dt;
          p.u = b["uz"].data_ptr();
          p.z = mode != 1 ? static_cast<const char*>(b["uz"].data_ptr()) + D * dtype_size(dt) : nullptr;
          p.ld = 2 * D;
          if (mode < 2) {
            p.xproj = b["xproj"].data_ptr();
            p.P = P;
          } else {
            p.x_proj_w = b["xw"].data_ptr();
            if (mode >= 4 && cuda) p.xrow = b["xrow"].data_ptr();
            if (mode == 2 || mode == 4) {
              p.conv_w = b["cw"].data_ptr();
              p.conv_b = b["cb"].data_ptr();
              p.conv_state = b["cstate"].data_ptr();
              p.K = K;
            }
          }
          p.dt_w = b["dt_w"].data_ptr();
          p.dt_bias = b["dt_b"].data_ptr();
          p.A = b["A"].data_ptr();
          p.D_skip = b["D"].data_ptr();
          p.state = b["state"].data_ptr();
          p.y = b["y"].data_ptr();
          cuda ? ops::run_cuda("ssm_step", MT_CUDA_KERNEL(ssm_step_cuda), p) : ssm_step_cpu(p);
        };
        compare(run_on(Device::cuda(), h, call), run_on(Device::cpu(), h, call), {"y", "state", "uz", "cstate"}, dt,
                "ssm_step B " + std::to_string(B) + " mode " + std::to_string(mode),
                B == 3 || dt == DType::F64 ? 1.0
                : dt == DType::F32         ? 50.0
                                           : 4.0);
      }
    }
}

}  // namespace mt::test

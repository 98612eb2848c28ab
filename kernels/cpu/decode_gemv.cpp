// CPU reference of the fused decode projections (math in kernels/decode_gemv.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/decode_gemv.h"
#include "kernels/detail/decode_cpu.h"
#include "kernels/detail/decode_math.h"
#include "kernels/ssm_step.h"

namespace mt::kernels {

namespace {

// xin [B, H] (rounded to T, held in the compute type) from the norm input stage.
template <typename T>
std::vector<typename decode::Storage<T>::C> norm_rows(int64_t B, int64_t H, DecodeInput input,
                                                      const DecodeNormArgs& a) {
  using S = decode::Storage<T>;
  using C = typename S::C;
  const T* h = static_cast<const T*>(a.h);
  const T* emb = static_cast<const T*>(a.embedding);
  const C* res_in = static_cast<const C*>(a.residual_in);
  C* res_out = static_cast<C*>(a.residual_out);
  const C* w = static_cast<const C*>(a.weight);
  const C* bias = static_cast<const C*>(a.bias);
  const C eps = static_cast<C>(a.eps);
  std::vector<C> xin(static_cast<size_t>(B * H)), r(static_cast<size_t>(H));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < H; ++i) {
      if (input == DecodeInput::EmbedNorm) {
        r[i] = S::load(emb, a.tokens[b] * H + i);
      } else {
        r[i] = S::load(h, b * H + i) + (res_in ? res_in[b * H + i] : C(0));
      }
      if (res_out) res_out[b * H + i] = a.round_residual ? S::round(r[i]) : r[i];
    }
    C mu = C(0);
    if (!a.rms) {
      for (int64_t i = 0; i < H; ++i) mu += r[i];
      mu /= static_cast<C>(H);
    }
    C ss = C(0);
    for (int64_t i = 0; i < H; ++i) ss += (r[i] - mu) * (r[i] - mu);
    const C rstd = C(1) / std::sqrt(ss / static_cast<C>(H) + eps);
    for (int64_t i = 0; i < H; ++i) xin[b * H + i] = S::round((r[i] - mu) * rstd * w[i] + (bias ? bias[i] : C(0)));
  }
  if (input == DecodeInput::EmbedNorm && a.step_counter) ++*a.step_counter;
  return xin;
}

template <typename T>
void gemv(const DecodeGemvParams& p) {
  using S = decode::Storage<T>;
  using C = typename S::C;
  const int64_t B = p.B, in = p.in, out = p.out;
  std::vector<C> xin;
  if (p.input == DecodeInput::Plain) {
    xin.resize(static_cast<size_t>(B * in));
    for (int64_t i = 0; i < B * in; ++i) xin[i] = S::load(static_cast<const T*>(p.x), i);
  } else {
    xin = norm_rows<T>(B, in, p.input, p.norm);
  }
  const T* W = static_cast<const T*>(p.W);
  const T* bias = static_cast<const T*>(p.bias);
  const bool mixer = p.output == DecodeOutput::MixerIn;
  const int64_t di = p.d_inner, K = p.K;
  T* conv_state = static_cast<T*>(p.conv_state);
  // u of the x half (rounded), for x_proj's partial products.
  std::vector<C> u(mixer ? static_cast<size_t>(B * di) : 0);
#pragma omp parallel for schedule(static) if (out * in * B >= (1 << 16))
  for (int64_t o = 0; o < out; ++o) {
    C wc[kConvMaxK] = {}, sv[kConvMaxK] = {};
    if (mixer && o < di)
      for (int64_t k = 0; k < K; ++k) wc[k] = S::load(static_cast<const T*>(p.conv_w), o * K + k);
    for (int64_t b = 0; b < B; ++b) {
      C acc = C(0);
      for (int64_t i = 0; i < in; ++i) acc += S::load(W, o * in + i) * xin[b * in + i];
      if (bias) acc += S::load(bias, o);
      if (!mixer) {
        if (p.y_compute)
          static_cast<C*>(p.y)[b * out + o] = acc;
        else
          S::store(static_cast<T*>(p.y), b * out + o, acc);
        continue;
      }
      if (o >= di) {
        S::store(static_cast<T*>(p.y), b * out + o, acc);
        continue;
      }
      T* s = conv_state + b * (K - 1) * di + o;
      const C cb = p.conv_b ? S::load(static_cast<const T*>(p.conv_b), o) : C(0);
      const C xv = S::round(acc);
      for (int64_t j = 0; j + 1 < K; ++j) sv[j] = S::load(s, j * di);
      const C pre = decode::conv_pre<kConvMaxK>(xv, static_cast<int>(K), wc, sv, cb);
      for (int64_t j = 0; j + 2 < K; ++j) S::store(s, j * di, sv[j + 1]);
      if (K > 1) S::store(s, (K - 2) * di, xv);
      const C uv = S::round(decode::silu(pre));
      S::store(static_cast<T*>(p.y), b * out + o, uv);
      u[b * di + o] = uv;
    }
  }
  if (!mixer) return;
  const int64_t P = decode_xproj_partials(di), E = p.E;
  const T* xw = static_cast<const T*>(p.x_proj_w);
  C* xproj = static_cast<C*>(p.xproj);
  for (int64_t q = 0; q < P; ++q)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < E; ++e) {
        C s = C(0);
        for (int64_t c = q * kDecodeGemvRows; c < std::min(di, (q + 1) * kDecodeGemvRows); ++c)
          s += S::load(xw, e * di + c) * u[b * di + c];
        xproj[(q * B + b) * E + e] = s;
      }
}

template <typename T>
void norm(const DecodeNormParams& p) {
  using S = decode::Storage<T>;
  const auto xin = norm_rows<T>(p.B, p.H, p.input, p.norm);
  for (int64_t i = 0; i < p.B * p.H; ++i) S::store(static_cast<T*>(p.y), i, xin[i]);
}

void check_norm_args(DecodeInput input, const DecodeNormArgs& a) {
  MT_ASSERT(a.weight, "decode norm: missing weight");
  MT_ASSERT(input != DecodeInput::EmbedNorm || (a.embedding && a.tokens), "decode norm: missing embedding / tokens");
  MT_ASSERT(input != DecodeInput::Norm || a.h, "decode norm: missing input");
}

}  // namespace

void decode_gemv_cpu(const DecodeGemvParams& p) {
  MT_ASSERT(p.B >= 0 && p.in >= 1 && p.out >= 0 && p.W && p.y, "decode_gemv: bad sizes or missing buffers");
  if (p.input == DecodeInput::Plain)
    MT_ASSERT(p.x, "decode_gemv: missing input");
  else
    check_norm_args(p.input, p.norm);
  if (p.output == DecodeOutput::MixerIn)
    MT_ASSERT(p.out == 2 * p.d_inner && p.K >= 1 && p.K <= kConvMaxK && p.conv_w && (p.K == 1 || p.conv_state) &&
                  p.x_proj_w && p.xproj && p.E >= 1,
              "decode_gemv: bad mixer-in arguments");
  decode::dispatch_storage(p.dtype, "decode_gemv_cpu", [&](auto tag) { gemv<typename decltype(tag)::type>(p); });
}

void decode_norm_cpu(const DecodeNormParams& p) {
  MT_ASSERT(p.B >= 0 && p.H >= 1 && p.y && p.input != DecodeInput::Plain, "decode_norm: bad arguments");
  check_norm_args(p.input, p.norm);
  decode::dispatch_storage(p.dtype, "decode_norm_cpu", [&](auto tag) { norm<typename decltype(tag)::type>(p); });
}

}  // namespace mt::kernels

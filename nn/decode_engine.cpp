#include "nn/decode_engine.h"

#include <algorithm>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/shape_ops.h"
#include "core/allocator.h"
#include "kernels/decode_gemv.h"
#include "kernels/gemm.h"
#include "kernels/sampling.h"
#include "kernels/ssm_step.h"
#if defined(MT_WITH_CUDA)
#include "core/cuda_check.h"
#include "core/cuda_context.h"
#endif

namespace mt::nn {

using namespace kernels;

// One layer's weights (the model's compute-dtype copies; norm weights, dt bias, A and D in the state dtype) and
// its recurrent state.
struct DecodeEngine::Layer {
  Tensor norm_w, norm_b;
  Tensor in_w, in_b;      // [2 d_inner, d_model], [2 d_inner] or undefined
  Tensor conv_w, conv_b;  // [d_inner, 1, K] (read as [d_inner, K]), [d_inner] or undefined
  Tensor x_w;             // [R + 2N, d_inner]
  Tensor dt_w, dt_b;      // [d_inner, R], [d_inner]
  Tensor A, D;            // [d_inner, N] = -exp(A_log), [d_inner]
  Tensor out_w, out_b;    // [d_model, d_inner], [d_model] or undefined
  Tensor conv_state;      // [B, K-1, d_inner] compute dtype
  Tensor ssm_state;       // [B, d_inner, N] state dtype
};

namespace {

void* ptr(const Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr; }

}  // namespace

DecodeEngine::DecodeEngine(const MambaLMHeadModel& model, Device dev, const DecodeEngineOptions& opt)
    : model_(model), cfg_(model.config()), dev_(dev), opt_(opt), cd_(opt.compute_dtype), sd_(state_dtype(cd_)) {
  MT_CHECK(!cfg_.bidirectional, ErrorKind::Usage,
           "a bidirectional model cannot generate: it reads every sequence in both directions, so it cannot decode "
           "one token at a time");
  MT_CHECK(!cfg_.rc_equivariant, ErrorKind::Usage,
           "a reverse-complement-equivariant model cannot generate: it reads the reverse strand of the whole "
           "sequence, so it cannot decode one token at a time");
  MT_CHECK(opt_.batch >= 1, ErrorKind::Usage, "decode: batch must be >= 1, got ", opt_.batch);
  MT_CHECK(opt_.max_new_tokens >= 1, ErrorKind::Usage, "decode: max new tokens must be >= 1, got ",
           opt_.max_new_tokens);
  MT_CHECK(opt_.empty_kernels >= 0, ErrorKind::Usage, "decode: empty kernels must be >= 0, got ", opt_.empty_kernels);
  MT_CHECK(is_floating(cd_), ErrorKind::Usage, "decode: compute dtype must be a float type, got ", dtype_name(cd_));
  const SamplingConfig& sc = opt_.sampling;
  sample_check_options(sc.temperature, sc.top_k, sc.top_p, sc.repetition_penalty);
  const Tensor& emb = *model_.backbone.embeddings.weight;
  MT_CHECK(emb.device() == dev_, ErrorKind::Usage, "decode: the model is on ", emb.device().str(), ", not on ",
           dev_.str());

  const int64_t B = opt_.batch, V = cfg_.vocab_size, dm = cfg_.d_model, di = cfg_.d_inner, N = cfg_.d_state;
  const int64_t R = cfg_.dt_rank, E = R + 2 * N, K = cfg_.d_conv;
  // Conv widths above kConvMaxK (Mamba uses 4) take the reference path.
  fused_ = opt_.fused && K <= kConvMaxK;
  pdl_ = false;
#if defined(MT_WITH_CUDA)
  if (dev_.is_cuda()) {
    // f64 takes the reference path on the GPU.
    if (cd_ == DType::F64) fused_ = false;
    gemv_path_ = B <= std::min<int64_t>(opt_.gemv_max_batch, kDecodeGemvMaxBatch) &&
                 decode_gemv_cuda_supports(B, dm, K, E, cd_) && decode_gemv_cuda_supports(B, di, 1, 0, cd_);
    pdl_ = opt_.pdl && CudaContext::get().props().major >= 9;
  }
#endif

  NoGradGuard ng;
  embedding_ = as_compute(emb, cd_);
  lm_head_ = model_.lm_head ? as_compute(*model_.lm_head->weight, cd_) : embedding_;
  norm_f_w_ = as_compute(*model_.backbone.norm_f.weight, sd_);
  if (model_.backbone.norm_f.bias) norm_f_b_ = as_compute(*model_.backbone.norm_f.bias, sd_);
  for (const auto& blk : model_.backbone.layers) {
    const MambaMixer& mx = blk->mixer;
    Layer L;
    L.norm_w = as_compute(*blk->norm.weight, sd_);
    if (blk->norm.bias) L.norm_b = as_compute(*blk->norm.bias, sd_);
    L.in_w = as_compute(*mx.in_proj.weight, cd_);
    if (mx.in_proj.bias) L.in_b = as_compute(*mx.in_proj.bias, cd_);
    L.conv_w = as_compute(*mx.conv1d.weight, cd_);
    if (mx.conv1d.bias) L.conv_b = as_compute(*mx.conv1d.bias, cd_);
    L.x_w = as_compute(*mx.x_proj.weight, cd_);
    L.dt_w = as_compute(*mx.dt_proj.weight, cd_);
    L.dt_b = as_compute(*mx.dt_proj.bias, sd_);
    L.A = neg(exp(as_compute(*mx.A_log, sd_)));  // as the model computes it
    L.D = as_compute(*mx.D, sd_);
    L.out_w = as_compute(*mx.out_proj.weight, cd_);
    if (mx.out_proj.bias) L.out_b = as_compute(*mx.out_proj.bias, cd_);
    L.conv_state = Tensor::zeros({B, K - 1, di}, cd_, dev_);
    L.ssm_state = Tensor::zeros({B, di, N}, sd_, dev_);
    layers_.push_back(std::move(L));
  }

  tokens_ = Tensor::zeros({B}, DType::I64, dev_);
  step_ = Tensor::zeros({1}, DType::I64, dev_);
  row_ids_ = Tensor::zeros({B}, DType::I64, dev_);
  history_ = Tensor::zeros({B, opt_.max_new_tokens}, DType::I64, dev_);
  seen_ = Tensor::zeros({B, (V + 31) / 32}, DType::I32, dev_);
  // CUDA: sampling's keys and weights; greedy rows use it for their argmax over several blocks (kernels/sampling.h).
  if (dev_.is_cuda()) scratch_ = Tensor::zeros({B, 2 * V}, DType::I32, dev_);
  logits_ = Tensor::zeros({B, V}, DType::F32, dev_);
  logits_c_ = sd_ == DType::F32 ? logits_ : Tensor::zeros({B, V}, sd_, dev_);
  if (fused_) {
    h_ = Tensor::zeros({B, dm}, cd_, dev_);
    res_[0] = Tensor::zeros({B, dm}, sd_, dev_);
    res_[1] = Tensor::zeros({B, dm}, sd_, dev_);
    xz_ = Tensor::zeros({B, 2 * di}, cd_, dev_);
    y_ = Tensor::zeros({B, di}, cd_, dev_);
    if (dev_.is_cpu() || gemv_path_)
      xproj_ = Tensor::zeros({decode_xproj_partials(di), B, E}, sd_, dev_);
    else {
      xin_ = Tensor::zeros({B, dm}, cd_, dev_);
      xrow_ = Tensor::zeros({B, E}, sd_, dev_);
    }
  }
}

DecodeEngine::~DecodeEngine() {
#if defined(MT_WITH_CUDA)
  if (graph_exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph_exec_));
#endif
}

std::string DecodeEngine::describe() const {
  if (!fused_) return "reference (the model's forward per token)";
  if (dev_.is_cpu()) return "fused, cpu";
  std::string s = "fused";
  if (graph_exec_)
    s += ", cuda graph";
  else if (!opt_.cuda_graph)
    s += ", no cuda graph";
  else if (graph_tried_)
    s += ", no cuda graph (" + graph_note_ + ")";
  s += pdl_ ? ", pdl" : ", no pdl";
  s += gemv_path_ ? ", gemv kernels" : ", cublas projections";
  if (gemv_path_ && opt_.empty_kernels > 0) s += str(", ", opt_.empty_kernels, " empty kernels after each");
  return s;
}

void DecodeEngine::prefill(const Tensor& ids, const std::vector<int64_t>& row_ids) {
  const int64_t B = opt_.batch, V = cfg_.vocab_size;
  MT_CHECK(ids.dim() == 2 && ids.size(0) == B && ids.size(1) >= 1, ErrorKind::Usage, "decode: prompts must be [", B,
           ", L >= 1], got ", ids.describe());
  MT_CHECK(static_cast<int64_t>(row_ids.size()) == B, ErrorKind::Usage, "decode: ", row_ids.size(),
           " row ids for a batch of ", B);
  const int64_t L = ids.size(1);
  NoGradGuard ng;
  cache_ = make_cache(cfg_, B, cd_, dev_);
  ForwardOptions fo;
  fo.compute_dtype = cd_;
  fo.cache = &cache_;
  const Tensor dev_ids = ids.to(dev_).to(DType::I64).contiguous();
  LMOutput out = model_.forward(dev_ids, fo, /*with_loss=*/false, Tensor(), /*with_logits=*/false);
  const Tensor last = slice(out.backbone.last_hidden_state, 1, L - 1, L);
  logits_c_.copy_(reshape(model_.logits(last, cd_), {B, V}));
  if (!logits_c_.same(logits_)) logits_.copy_(logits_c_);
  if (fused_)
    for (size_t i = 0; i < layers_.size(); ++i) {
      layers_[i].conv_state.copy_(cache_.layers[i].conv_state);
      layers_[i].ssm_state.copy_(cache_.layers[i].ssm_state);
    }
  // The repetition penalty counts the prompt's tokens as seen.
  seen_.zero_();
  if (opt_.sampling.repetition_penalty != 1.0) {
    const std::vector<int64_t> host = dev_ids.to_vector_i64();
    const int64_t W = seen_.size(1);
    std::vector<int64_t> words(static_cast<size_t>(B * W), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t) {
        const int64_t v = host[b * L + t];
        words[b * W + (v >> 5)] |= int64_t{1} << (v & 31);
      }
    // Words hold 32 bits; from_vector_i64 converts to i32 by value, so bit 31 is carried as its two's complement.
    for (int64_t& w : words) w = static_cast<int32_t>(static_cast<uint32_t>(w));
    seen_.copy_(Tensor::from_vector_i64(words, {B, W}, DType::I32));
  }
  row_ids_.copy_(Tensor::from_vector_i64(row_ids, {B}));
  step_.zero_();
  sample(/*pdl=*/false);
  generated_ = 1;
  started_ = true;
}

void DecodeEngine::step(int64_t n) {
  MT_CHECK(started_, ErrorKind::Usage, "decode: step before prefill");
  MT_CHECK(n >= 0 && generated_ + n <= opt_.max_new_tokens, ErrorKind::Usage, "decode: ", generated_, " + ", n,
           " tokens exceed max_new_tokens ", opt_.max_new_tokens);
  for (int64_t i = 0; i < n; ++i) {
#if defined(MT_WITH_CUDA)
    if (dev_.is_cuda() && fused_ && opt_.cuda_graph) {
      if (!graph_tried_) capture_graph();
      if (graph_exec_) {
        MT_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec_), CudaContext::get().stream()));
        ++generated_;
        continue;
      }
    }
#endif
    run_step();
    ++generated_;
  }
}

std::vector<int64_t> DecodeEngine::tokens(int64_t from, int64_t to) const {
  MT_CHECK(0 <= from && from <= to && to <= generated_, ErrorKind::Usage, "decode: tokens [", from, ", ", to, ") of ",
           generated_);
  const int64_t B = opt_.batch, n = to - from;
  if (n == 0) return {};
  return history_.as_strided({B, n}, {opt_.max_new_tokens, 1}, from).contiguous().to_vector_i64();
}

void DecodeEngine::run_step() {
  if (fused_)
    run_fused_step();
  else
    run_reference_step();
}

void DecodeEngine::run_reference_step() {
  const int64_t B = opt_.batch, V = cfg_.vocab_size;
  NoGradGuard ng;
  ForwardOptions fo;
  fo.compute_dtype = cd_;
  fo.cache = &cache_;
  Tensor lg = model_.forward(tokens_.view({B, 1}), fo).logits;
  logits_c_.copy_(reshape(lg, {B, V}));
  if (!logits_c_.same(logits_)) logits_.copy_(logits_c_);
  step_.fill_(static_cast<double>(generated_));
  sample(/*pdl=*/false);
}

void DecodeEngine::run_fused_step() {
  const bool cuda = dev_.is_cuda();
  const int64_t B = opt_.batch, V = cfg_.vocab_size, dm = cfg_.d_model, di = cfg_.d_inner;
  const int64_t nl = static_cast<int64_t>(layers_.size());
  auto norm_args = [&](const Tensor& w, const Tensor& b) {
    DecodeNormArgs a;
    a.weight = ptr(w);
    a.bias = ptr(b);
    a.rms = cfg_.norm == NormKind::RMSNorm;
    a.eps = cfg_.norm_eps;
    a.round_residual = !cfg_.residual_in_fp32 && is_half(cd_);
    return a;
  };
  auto gemv = [&](DecodeGemvParams p) {
    p.B = B;
    p.dtype = cd_;
    p.pdl = pdl_;
#if defined(MT_WITH_CUDA)
    if (cuda) return decode_gemv_cuda(p);
#endif
    decode_gemv_cpu(p);
  };
  // y[B, out] = input (x [B, in], or the norm of a residual stream) @ W^T + bias.
  auto gemv_store = [&](const Tensor& W, const Tensor& bias, DecodeInput input, const void* x, const DecodeNormArgs& na,
                        void* y, bool y_compute) {
    DecodeGemvParams g;
    g.in = W.size(1);
    g.out = W.size(0);
    g.W = ptr(W);
    g.bias = ptr(bias);
    g.input = input;
    g.x = x;
    g.norm = na;
    g.output = DecodeOutput::Store;
    g.y = y;
    g.y_compute = y_compute;
    gemv(g);
  };
  auto empty_kernels = [&] {
#if defined(MT_WITH_CUDA)
    if (cuda)
      for (int64_t i = 0; i < opt_.empty_kernels; ++i) decode_empty_cuda(CudaContext::get().sm_count(), pdl_);
#endif
  };
#if defined(MT_WITH_CUDA)
  // The cuBLAS path: xin = the norm of a residual stream; y[M, N] (row stride ldc) = x[M, K] @ W[N, K]^T + bias
  // (c_f32: y in f32).
  auto norm_to_xin = [&](DecodeInput input, const DecodeNormArgs& na) {
    DecodeNormParams np;
    np.B = B;
    np.H = dm;
    np.dtype = cd_;
    np.input = input;
    np.norm = na;
    np.y = ptr(xin_);
    np.pdl = pdl_;
    decode_norm_cuda(np);
  };
  auto gemm = [&](const void* x, int64_t lda, const Tensor& W, const Tensor& bias, void* y, int64_t ldc, bool c_f32) {
    GemmParams g;
    g.dtype = cd_;
    g.trans_b = true;
    g.M = B;
    g.N = W.size(0);
    g.K = W.size(1);
    g.A = x;
    g.lda = lda;
    g.B = ptr(W);
    g.ldb = W.size(1);
    g.C = y;
    g.ldc = ldc;
    g.bias = ptr(bias);
    g.c_f32 = c_f32 && is_half(cd_);
    gemm_cuda(g);
  };
#endif

  for (int64_t l = 0; l < nl; ++l) {
    Layer& L = layers_[l];
    DecodeNormArgs na = norm_args(L.norm_w, L.norm_b);
    const DecodeInput input = l == 0 ? DecodeInput::EmbedNorm : DecodeInput::Norm;
    if (l == 0) {
      na.embedding = ptr(embedding_);
      na.tokens = tokens_.data<int64_t>();
      na.step_counter = step_.data<int64_t>();
    } else {
      na.h = ptr(h_);
      na.residual_in = ptr(res_[(l - 1) % 2]);
    }
    na.residual_out = ptr(res_[l % 2]);
    if (!cuda || gemv_path_) {
      // in_proj with the norm in front and the conv step + x_proj partials behind; the state update; out_proj.
      DecodeGemvParams g;
      g.in = dm;
      g.out = 2 * di;
      g.W = ptr(L.in_w);
      g.bias = ptr(L.in_b);
      g.input = input;
      g.norm = na;
      g.output = DecodeOutput::MixerIn;
      g.y = ptr(xz_);
      g.d_inner = di;
      g.K = cfg_.d_conv;
      g.E = cfg_.dt_rank + 2 * cfg_.d_state;
      g.conv_w = ptr(L.conv_w);
      g.conv_b = ptr(L.conv_b);
      g.conv_state = ptr(L.conv_state);
      g.x_proj_w = ptr(L.x_w);
      g.xproj = ptr(xproj_);
      gemv(g);
      empty_kernels();
      ssm_step(L, /*row_mode=*/false, l + 1 < nl ? &layers_[l + 1] : nullptr);
      empty_kernels();
      gemv_store(L.out_w, L.out_b, DecodeInput::Plain, ptr(y_), DecodeNormArgs{}, ptr(h_), false);
      empty_kernels();
      continue;
    }
#if defined(MT_WITH_CUDA)
    norm_to_xin(input, na);
    gemm(ptr(xin_), dm, L.in_w, L.in_b, ptr(xz_), 2 * di, false);
    ssm_step(L, /*row_mode=*/true);
    gemm(ptr(y_), di, L.out_w, L.out_b, ptr(h_), dm, false);
#endif
  }

  DecodeNormArgs nf = norm_args(norm_f_w_, norm_f_b_);
  nf.h = ptr(h_);
  nf.residual_in = ptr(res_[(nl - 1) % 2]);
  if (!cuda || gemv_path_) {
    gemv_store(lm_head_, Tensor(), DecodeInput::Norm, nullptr, nf, ptr(logits_c_), true);
  } else {
#if defined(MT_WITH_CUDA)
    norm_to_xin(DecodeInput::Norm, nf);
    gemm(ptr(xin_), dm, lm_head_, Tensor(), ptr(logits_), V, true);
#endif
  }
  if (!logits_c_.same(logits_)) logits_.copy_(logits_c_);
  sample(pdl_);
}

void DecodeEngine::ssm_step(Layer& L, bool row_mode, const Layer* next) {
  const int64_t di = cfg_.d_inner;
  SsmStepParams s;
  s.B = opt_.batch;
  s.D = di;
  s.N = cfg_.d_state;
  s.R = cfg_.dt_rank;
  s.dtype = cd_;
  s.u = ptr(xz_);
  s.z = static_cast<const char*>(s.u) + di * dtype_size(cd_);
  s.ld = 2 * di;
  if (row_mode) {  // conv step, x_proj and the state update in one kernel
    s.x_proj_w = ptr(L.x_w);
    s.conv_w = ptr(L.conv_w);
    s.conv_b = ptr(L.conv_b);
    s.conv_state = ptr(L.conv_state);
    s.K = cfg_.d_conv;
    s.xrow = ptr(xrow_);
  } else {
    s.xproj = ptr(xproj_);
    s.P = decode_xproj_partials(di);
    // The GEMV path on CUDA: the update asks L2 for the weights of out_proj, which comes next, and for what the next
    // layer's in_proj reads: its weights, and what its blocks load before their wait (x_proj's weights, the conv taps
    // and state, the norm's weights), so that those kernels find them in L2 rather than DRAM and in_proj's blocks
    // reach their wait sooner.
    auto pf = [&](const Tensor& t) {
      if (t.defined()) s.prefetch.add(ptr(t), static_cast<int64_t>(t.nbytes()));
    };
    pf(L.out_w);
    if (next) {
      pf(next->in_w);
      pf(next->x_w);
      pf(next->conv_w);
      pf(next->conv_state);
      pf(next->norm_w);
    }
  }
  s.dt_w = ptr(L.dt_w);
  s.dt_bias = ptr(L.dt_b);
  s.A = ptr(L.A);
  s.D_skip = ptr(L.D);
  s.state = ptr(L.ssm_state);
  s.y = ptr(y_);
  s.pdl = pdl_;
#if defined(MT_WITH_CUDA)
  if (dev_.is_cuda()) return ssm_step_cuda(s);
#endif
  ssm_step_cpu(s);
}

void DecodeEngine::sample(bool pdl) {
  const SamplingConfig& sc = opt_.sampling;
  SampleParams p;
  p.B = opt_.batch;
  p.V = cfg_.vocab_size;
  p.logits = logits_.data<float>();
  // The mask only matters with a penalty: without one the sampler neither reads nor updates it.
  if (sc.repetition_penalty != 1.0) {
    p.seen = static_cast<uint32_t*>(seen_.data_ptr());
    p.seen_words = seen_.size(1);
  }
  p.temperature = static_cast<float>(sc.temperature);
  p.top_k = sc.top_k;
  p.top_p = sc.top_p;
  p.repetition_penalty = static_cast<float>(sc.repetition_penalty);
  p.seed = sc.seed;
  p.row_ids = row_ids_.data<int64_t>();
  p.step = step_.data<int64_t>();
  p.tokens = tokens_.data<int64_t>();
  p.history = history_.data<int64_t>();
  p.history_len = opt_.max_new_tokens;
  p.scratch = static_cast<uint32_t*>(ptr(scratch_));
  p.pdl = pdl;
#if defined(MT_WITH_CUDA)
  if (dev_.is_cuda()) return sample_cuda(p);
#endif
  sample_cpu(p);
}

void DecodeEngine::capture_graph() {
#if defined(MT_WITH_CUDA)
  graph_tried_ = true;
  const cudaStream_t stream = CudaContext::get().stream();
  // Up to two attempts: with PDL as configured, then without it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int64_t allocations = cuda_memory_stats().num_allocations;
    MT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    std::string err;
    try {
      run_fused_step();
    } catch (const std::exception& e) {
      err = e.what();
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (err.empty() && end != cudaSuccess) err = str("capture failed: ", cudaGetErrorString(end));
    // A tensor allocated while capturing would go back to the caching allocator afterwards and be handed to other
    // tensors while the graph still writes it.
    if (err.empty() && cuda_memory_stats().num_allocations != allocations) err = "the step allocated memory";
    cudaGraphExec_t exec = nullptr;
    if (err.empty()) {
      const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
      if (inst != cudaSuccess) err = str("instantiation failed: ", cudaGetErrorString(inst));
    }
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // a failed capture leaves a (non-sticky) error behind
    if (err.empty()) {
      graph_exec_ = exec;
      return;
    }
    graph_note_ = err;
    if (!pdl_) return;
    pdl_ = false;
  }
#endif
}

}  // namespace mt::nn

#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/shape_ops.h"
#include "core/allocator.h"
#include "core/determinism.h"
#include "core/fault_hook.h"
#include "data/selective_copying.h"
#include "nn/chunked.h"
#include "nn/heads.h"
#include "nn/hf_io.h"
#include "nn/init.h"
#include "optim/adamw.h"
#include "optim/grad_check.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "train/best.h"
#include "train/ckpt/checkpoint.h"
#include "train/ckpt/checkpoint_io.h"
#include "train/cli/commands.h"
#include "train/config/schema.h"
#include "train/dist/grad_sync.h"
#include "train/dist/rendezvous.h"
#include "train/inference.h"
#include "train/init_from.h"
#include "train/logger.h"
#include "train/metrics.h"
#include "train/plot.h"
#include "train/run_dir.h"
#include "train/task_data.h"
#include "train/version.h"
#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_context.h"
#endif

namespace mt::train {

namespace {

// SIGINT / SIGTERM / SIGHUP: remember the signal; the loop checks after each step, saves a checkpoint and returns
// 128 + sig. SIGHUP (the terminal or ssh session closed) stops the run like SIGTERM, unless it was ignored when the
// run started (nohup): then it stays ignored.
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int sig) { g_signal = sig; }

class SignalScope {
 public:
  SignalScope() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGHUP, nullptr, &old_hup_);
    if (old_hup_.sa_handler != SIG_IGN) sigaction(SIGHUP, &sa, nullptr);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGHUP, &old_hup_, nullptr);
  }

 private:
  struct sigaction old_int_ {
  }, old_term_{}, old_hup_{};
};

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM"; }

const char* kModelPrefix = "model/";
const char* kAvgPrefix = "optim/exp_avg/";
const char* kSqPrefix = "optim/exp_avg_sq/";

// Keys of two config.json texts whose values differ: "d_model: checkpoint 64, config 128".
std::string json_diff(const std::string& a_text, const std::string& b_text) {
  nlohmann::json a = nlohmann::json::parse(a_text, nullptr, false), b = nlohmann::json::parse(b_text, nullptr, false);
  if (a.is_discarded() || b.is_discarded() || !a.is_object() || !b.is_object()) return "unreadable model config";
  std::string out;
  auto add = [&](const std::string& k, const std::string& av, const std::string& bv) {
    out += str(out.empty() ? "" : "; ", k, ": checkpoint ", av, ", config ", bv);
  };
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (!b.contains(it.key()))
      add(it.key(), it.value().dump(), "(absent)");
    else if (b[it.key()] != it.value())
      add(it.key(), it.value().dump(), b[it.key()].dump());
  }
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key())) add(it.key(), "(absent)", it.value().dump());
  return out;
}

// run.device for this rank: "auto" / "cuda" under a launcher means the GPU of LOCAL_RANK; "cuda:K" is taken as
// given (ranks sharing one GPU, with the tcp backend). Selects the GPU before anything touches CUDA.
Device rank_device(const std::string& name, const DistEnv& env) {
  Device d = resolve_device(name);
  if (d.is_cuda() && env.distributed() && (name == "auto" || name == "cuda")) d.index = env.local_rank;
#if defined(MT_WITH_CUDA)
  if (d.is_cuda()) {
    int n = 0;
    MT_CHECK(cudaGetDeviceCount(&n) == cudaSuccess && d.index < n, ErrorKind::Device, "rank ", env.rank, ": ", d.str(),
             " does not exist (", n, " visible GPU(s); LOCAL_RANK=", env.local_rank,
             "): start at most one rank per GPU, or give run.device cuda:K with distributed.backend tcp");
    MT_CHECK(cudaSetDevice(d.index) == cudaSuccess, ErrorKind::Device, "rank ", env.rank, ": cannot select ", d.str());
  }
#endif
  return d;
}

// The device for the run records: "cpu", or the GPU as CudaContext describes it.
std::string device_name(const Device& d) {
#if defined(MT_WITH_CUDA)
  if (d.is_cuda()) return CudaContext::get().describe();
#endif
  return d.str();
}

// FNV-1a over the bytes of every parameter (fp32 masters): ranks compare it to prove they start from the same weights.
uint64_t params_hash(const std::vector<Tensor*>& params) {
  uint64_t h = 1469598103934665603ULL;
  for (const Tensor* p : params) {
    const Tensor c = p->detach().to(Device::cpu()).contiguous();
    const unsigned char* b = static_cast<const unsigned char*>(c.data_ptr());
    for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ b[i]) * 1099511628211ULL;
  }
  return h;
}

// The Philox key of a micro-batch's dropout masks: a pure function of the run's dropout seed and the micro-batch's
// first sample index (which no two micro-batches of a run share).
uint64_t micro_batch_key(uint64_t seed, int64_t first_sample) {
  uint32_t r[4];
  Philox::block(seed, static_cast<uint64_t>(first_sample), r);
  return (static_cast<uint64_t>(r[1]) << 32) | r[0];
}

// The run's length in optimizer steps: trainer.max_steps, or trainer.epochs passes over the training samples.
int64_t run_steps(const TrainConfig& c, const TaskData& task) {
  if (!(c.trainer.epochs > 0)) return c.trainer.max_steps;
  const int64_t n = task.epoch_samples();
  MT_CHECK(n > 0, ErrorKind::Config,
           "trainer.epochs needs data of a finite size (data.kind text or classification): give trainer.max_steps");
  const double steps =
      std::ceil(c.trainer.epochs * static_cast<double>(n) / static_cast<double>(c.trainer.global_batch_size));
  MT_CHECK(steps < 1e15, ErrorKind::Config, "trainer.epochs: ", c.trainer.epochs, " epochs of ", n,
           " samples are too many steps");
  return std::max<int64_t>(1, static_cast<int64_t>(steps));
}

}  // namespace

DType precision_dtype(const std::string& precision) {
  if (precision == "fp32") return DType::F32;
  if (precision == "bf16") return DType::BF16;
  if (precision == "fp16") return DType::F16;
  throw Error(ErrorKind::Config, str("trainer.precision: expected fp32, bf16 or fp16, got '", precision, "'"));
}

struct Trainer::Impl {
  TrainConfig cfg;
  bool outputs_requested;  // the caller wants a run directory (train) or none (bench)
  bool write_outputs;      // ... and this rank writes it (rank 0)
  Device dev;
  DType cd;
  std::unique_ptr<TaskData> task;
  std::vector<int32_t> token_bytes;                         // language models: text bytes per token id
  std::unique_ptr<nn::MambaLMHeadModel> lm;                 // model.head lm
  std::unique_ptr<nn::MambaForSequenceClassification> cls;  // model.head sequence_classification
  nn::Module* model = nullptr;                              // whichever is in use
  nn::MambaBackbone* backbone = nullptr;
  std::vector<std::pair<std::string, Tensor*>> named;
  std::vector<Tensor*> params;
  std::unique_ptr<optim::AdamW> opt;
  optim::ScheduleOptions sched;
  int64_t total_steps = 0;        // the run's length: trainer.max_steps, or from trainer.epochs
  std::vector<char> in_backbone;  // per optimizer entry: a backbone.* parameter
  double head_scale = 1.0;        // optimizer.head_lr / optimizer.lr for the others
  std::unique_ptr<optim::DynamicLossScaler> scaler;
  Generator gen;  // its seed keys the dropout masks (micro_batch_key); its state is checkpointed
  int64_t step = 0, samples_seen = 0;
  std::string last_checkpoint;
  // The newest checkpoint saved outside a non-finite streak: the one the non-finite stop names, and which retention
  // keeps while a streak goes on (the checkpoints saved during it come after it).
  std::string last_good_checkpoint;
  // The logging window: the losses of the steps since the last logged one (skipped steps excluded). It is in the
  // checkpoint, so that a resumed run logs the same mean losses as an uninterrupted one.
  double log_loss_sum = 0;
  int64_t log_steps = 0;
  // Data parallelism (world_size > 1): the control plane and the gradient all-reduce.
  DistEnv env;
  std::unique_ptr<ControlPlane> cp;
  std::unique_ptr<GradSync> sync;
  int stop_vote = 0;  // some rank got SIGINT / SIGTERM / SIGHUP during the last step: all stop after it, with this one
  std::vector<std::unique_ptr<RunDirLock>> locks;  // rank 0 of a run that writes outputs: held for the process
  std::string resumed_config_yaml;                 // the resolved config of the checkpoint resumed from
  double elapsed_base = 0;                         // run/elapsed_s of that checkpoint
  BestTracker best;                                // checkpoint.monitor
  bool best_restored = false;                      // best holds the resumed checkpoint's ranking
  int64_t best_pointer_step = -1;                  // the step the checkpoint directory's `best` file names
  std::chrono::steady_clock::time_point t_start = std::chrono::steady_clock::now();
  bool root() const { return env.rank == 0; }
  bool dist() const { return env.world_size > 1; }

  Impl(const TrainConfig& c, bool w, const DistEnv& e)
      : cfg(c), outputs_requested(w), write_outputs(w && e.rank == 0), dev(rank_device(c.run.device, e)), env(e) {
    // Before the data and the model are built: a second trainer in this directory is refused at once, and an
    // unwritable output directory is found now rather than at the first save.
    if (write_outputs) locks = prepare_run_directory(cfg);
    cd = precision_dtype(cfg.trainer.precision);
    best = BestTracker(cfg.checkpoint.monitor, cfg.checkpoint.monitor_mode, cfg.checkpoint.keep_best);
    task = make_task_data(cfg);
    if (!task->classification()) token_bytes = token_text_bytes(cfg);
    Generator init_gen(cfg.run.seed);
    if (cfg.model.head == "sequence_classification") {
      cls = std::make_unique<nn::MambaForSequenceClassification>(cfg.model.mamba, cfg.model.num_classes,
                                                                 cfg.model.pooling);
      cls->init_parameters(init_gen);
      model = cls.get();
      backbone = &cls->backbone;
    } else {
      lm = std::make_unique<nn::MambaLMHeadModel>(cfg.model.mamba);
      lm->init_parameters(init_gen);
      model = lm.get();
      backbone = &lm->backbone;
    }
    if (!cfg.model.init_from.empty()) {
      const InitSource src = inspect_init_source(cfg.model.init_from);
      const InitReport rep = apply_init_tensors(*model, load_init_tensors(src), src, cls ? cfg.model.pooling : "");
      std::printf("model.init_from: %s\n", src.describe().c_str());
      for (const std::string& line : rep.lines()) std::printf("  %s\n", line.c_str());
      const std::string bad = nn::check_init_invariants(*backbone, /*after_training=*/true);
      MT_CHECK(bad.empty(), ErrorKind::Checkpoint, "model.init_from '", cfg.model.init_from, "': ", bad);
    }
    model->to(dev);
    named = model->named_parameters();
    params = model->parameters();
    optim::AdamWOptions ao;
    ao.lr = cfg.optimizer.lr;
    ao.beta1 = cfg.optimizer.beta1;
    ao.beta2 = cfg.optimizer.beta2;
    ao.eps = cfg.optimizer.eps;
    ao.weight_decay = cfg.optimizer.weight_decay;
    opt = std::make_unique<optim::AdamW>(named, ao);
    MT_CHECK(optim::parse_schedule_kind(cfg.scheduler.kind, &sched.kind), ErrorKind::Config,
             "scheduler.kind: expected cosine, constant or linear, got '", cfg.scheduler.kind, "'");
    sched.peak_lr = cfg.optimizer.lr;
    sched.min_lr = cfg.scheduler.min_lr;
    total_steps = run_steps(cfg, *task);
    sched.warmup_steps =
        cfg.scheduler.warmup_ratio > 0
            ? static_cast<long>(std::llround(cfg.scheduler.warmup_ratio * static_cast<double>(total_steps)))
            : cfg.scheduler.warmup_steps;
    sched.total_steps = total_steps;
    const char* warmup_key = cfg.scheduler.warmup_ratio > 0 ? "scheduler.warmup_ratio" : "scheduler.warmup_steps";
    MT_CHECK(sched.warmup_steps < total_steps, ErrorKind::Config, warmup_key, ": the warmup (", sched.warmup_steps,
             " steps) must be shorter than the run (", total_steps, " steps)");
    head_scale = cfg.optimizer.head_lr > 0 ? cfg.optimizer.head_lr / cfg.optimizer.lr : 1.0;
    for (const auto& e : opt->entries()) in_backbone.push_back(e.name.rfind("backbone.", 0) == 0);
    scaler = std::make_unique<optim::DynamicLossScaler>(cfg.trainer.loss_scale_init,
                                                        cfg.trainer.loss_scale_growth_interval, 2.0, 0.5,
                                                        /*enabled=*/cd == DType::F16);
    gen = Generator(cfg.run.seed ^ 0x64726f706f7574ULL);  // "dropout"
    if (env.world_size > 1) {
      const int64_t per = cfg.trainer.micro_batch_size * env.world_size;
      MT_CHECK(cfg.trainer.global_batch_size % per == 0, ErrorKind::Config, "trainer.global_batch_size (",
               cfg.trainer.global_batch_size, ") must be a multiple of trainer.micro_batch_size (",
               cfg.trainer.micro_batch_size, ") x WORLD_SIZE (", env.world_size, ")");
      // Connect after the data and the model are ready, so that slow starts do not eat into the timeout.
      cp = std::make_unique<ControlPlane>(env, cfg.distributed.timeout_s);
      const std::string backend =
          cfg.distributed.backend == "auto" ? default_grad_backend(dev) : cfg.distributed.backend;
      int64_t total = 0;
      for (Tensor* p : params) total += p->numel();
      sync = std::make_unique<GradSync>(params, make_grad_backend(backend, *cp, dev, total),
                                        static_cast<int64_t>(cfg.distributed.bucket_mb * 1024 * 1024));
    }
  }

  // Every rank must hold the same parameters (same init, same checkpoint): rank 0's hash against each rank's.
  void check_replicas(const char* when) {
    if (!dist()) return;
    const uint64_t mine = params_hash(params);
    std::vector<uint8_t> b(sizeof mine);
    std::memcpy(b.data(), &mine, sizeof mine);
    b = cp->broadcast(b, str("parameter hash ", when));
    uint64_t r0 = 0;
    std::memcpy(&r0, b.data(), sizeof r0);
    double differ = r0 == mine ? 0.0 : 1.0;
    cp->all_reduce_sum(&differ, 1, str("parameter check ", when));
    MT_CHECK(differ == 0, ErrorKind::Distributed, "rank ", env.rank, ": the parameters of ", differ,
             " rank(s) differ from rank 0's ", when, " (this rank's ", mine == r0 ? "match" : "differ", ")");
  }

  // trainer.chunk_len when it cuts the LM's sequences into several chunks, else 0 (whole sequences).
  int64_t chunk_len() const {
    return lm && cfg.trainer.chunk_len > 0 && cfg.trainer.chunk_len < cfg.data.seq_len ? cfg.trainer.chunk_len : 0;
  }

  int64_t accum() const {  // micro-batches per rank and step
    return cfg.trainer.global_batch_size / (cfg.trainer.micro_batch_size * env.world_size);
  }

  // Scored targets of a batch: next-token positions (LM) or labelled rows (classification).
  int64_t scored_count(const data::Batch& b) const {
    if (task->masked_lm()) return scored_masked_targets(b);
    if (!task->classification()) return scored_targets(b);
    const Tensor l = b.labels.contiguous();
    const int64_t* lp = l.data<int64_t>();
    int64_t n = 0;
    for (int64_t i = 0; i < l.numel(); ++i) n += lp[i] != data::kIgnoreIndex;
    return n;
  }

  // data.reset_at_document_end: the document starts of an LM batch, on the device (undefined when there are none).
  Tensor resets_of(const data::Batch& b) const {
    if (!lm || !cfg.data.reset_at_document_end) return Tensor();
    const Tensor r = data::document_starts(b.ids, task->eod_id());
    return r.defined() ? r.to(dev) : r;
  }

  // Mean loss of a batch on the tape; *out (optional) gets the logits.
  Tensor forward_loss(const data::Batch& b, nn::ForwardOptions fo, Tensor* out) const {
    if (cls) {
      fo.mask = b.mask.to(dev);
      Tensor logits = cls->forward(b.ids.to(dev), fo);
      if (out) *out = logits;
      return cross_entropy(logits, b.labels.to(dev), data::kIgnoreIndex);
    }
    fo.reset = resets_of(b);
    if (task->masked_lm()) {
      nn::LMOutput r = lm->forward(b.ids.to(dev), fo, false, Tensor(), /*with_logits=*/out != nullptr);
      if (out) *out = r.logits;
      return lm->masked_lm_loss(r.backbone.last_hidden_state, b.targets.to(dev), fo.compute_dtype);
    }
    nn::LMOutput r = lm->forward(b.ids.to(dev), fo, true, b.targets.to(dev), /*with_logits=*/out != nullptr);
    if (out) *out = r.logits;
    return r.loss;
  }

  StepStats train_step() {
    const DeterministicKernelsGuard deterministic(cfg.run.deterministic);  // core/determinism.h
    const int64_t micro = cfg.trainer.micro_batch_size, global = cfg.trainer.global_batch_size;
    std::vector<data::Batch> batches;
    std::vector<int64_t> scored, firsts;
    int64_t total_scored = 0;
    for (const MicroBatchSlice& mb : rank_micro_batches(samples_seen, global, micro, env.rank, env.world_size)) {
      batches.push_back(task->train_batch(cfg.run.seed, mb.first, mb.count));
      firsts.push_back(mb.first);
      scored.push_back(scored_count(batches.back()));
      total_scored += scored.back();
    }
    const int64_t n_micro = static_cast<int64_t>(batches.size());
    if (dist()) {  // the weights below are shares of the whole global batch's scored tokens
      double t = static_cast<double>(total_scored);
      cp->all_reduce_sum(&t, 1, str("scored-token count of step ", step + 1));
      total_scored = static_cast<int64_t>(t);
    }
    int64_t last_used = -1;  // the last micro-batch with a backward: its backward reduces the gradients
    for (int64_t a = 0; a < n_micro; ++a)
      if (scored[a] > 0) last_used = a;
    StepStats s;
    s.loss_scale = scaler->scale();
    nn::ForwardOptions fo;
    fo.compute_dtype = cd;
    fo.checkpoint_blocks = cfg.trainer.activation_checkpointing == "block";
    fo.dropout = cfg.model.dropout;
    fo.classifier_dropout = cfg.model.classifier_dropout;
    const bool dropout = fo.dropout > 0 || fo.classifier_dropout > 0;
    Tensor loss_sum;  // device scalar, no graph: the step's mean loss without a host sync per micro-batch
    // Each micro-batch's backward starts from no gradient; the earlier micro-batches' sum is carried and added in
    // front (carried + this), so one process accumulating micro-batches 0, 1 and two ranks holding one each form
    // every gradient in the same order: the same bits (tests/test_data_parallel.cpp).
    // Gradients are summed as (earlier micro-batches) + (this micro-batch), and within a micro-batch of several
    // backward passes (trainer.chunk_len) as (earlier passes) + (this pass): each backward starts from no gradient
    // and its result is added in front. So one process accumulating micro-batches 0, 1 and two ranks holding one each
    // form every gradient in the same order: the same bits (tests/test_data_parallel.cpp).
    auto take_grads = [&]() {
      std::vector<Tensor> g(params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        g[i] = grad(*params[i]);
        set_grad(*params[i], Tensor());
      }
      return g;
    };
    auto add_in_front = [&](const std::vector<Tensor>& front) {
      NoGradGuard ng;
      for (size_t i = 0; i < params.size(); ++i) {
        if (!front[i].defined()) continue;
        const Tensor g = grad(*params[i]);
        set_grad(*params[i], g.defined() ? add(front[i], g) : front[i]);
      }
    };
    std::vector<Tensor> earlier;  // the earlier micro-batches' sum, while a micro-batch runs
    bool have_grads = false;
    // One backward pass; `in_batch`: an earlier pass of the same micro-batch ran. reduce_now arms the gradient
    // all-reduce for the step's last pass (its hooks add what is carried in front of this pass's gradients).
    auto backward_pass = [&](const Tensor& objective, bool in_batch, bool reduce_now) {
      std::vector<Tensor> carried = in_batch ? take_grads() : std::vector<Tensor>();
      if (reduce_now) {
        if (!earlier.empty()) {
          if (carried.empty()) {
            carried = std::move(earlier);
          } else {
            NoGradGuard ng;
            for (size_t i = 0; i < params.size(); ++i)
              if (earlier[i].defined()) carried[i] = carried[i].defined() ? add(earlier[i], carried[i]) : earlier[i];
          }
          earlier.clear();
        }
        sync->arm(std::move(carried));
        backward(objective);
        return;
      }
      backward(objective);
      if (!carried.empty()) add_in_front(carried);
    };
    const int64_t chunk = chunk_len();
    for (int64_t a = 0; a < n_micro; ++a) {
      const data::Batch& b = batches[a];
      s.tokens += b.tokens > 0 ? b.tokens : b.ids.numel();
      if (scored[a] == 0) continue;  // nothing to learn from (cannot happen with the shipped data sources)
      const double w = static_cast<double>(scored[a]) / static_cast<double>(total_scored);
      const bool last_pass_of_step = sync && a == last_used;
      if (have_grads) earlier = take_grads();
      // Dropout masks: a generator keyed by the micro-batch's first sample, so that they depend on neither the number
      // of ranks nor what ran before (a resumed run draws the same ones).
      Generator mgen(micro_batch_key(gen.seed(), firsts[a]));
      fo.dropout_gen = dropout ? &mgen : nullptr;
      Tensor loss;
      if (chunk > 0) {  // the sequence chunk by chunk, last to first (nn/chunked.h): the whole-sequence gradient
        nn::ForwardOptions fb = fo;
        fb.reset = resets_of(b);
        nn::ChunkedLMLoss cl(*lm, b.ids.to(dev), b.targets.to(dev), chunk, fb);
        for (int64_t c = cl.num_chunks() - 1; c >= 0; --c) {
          backward_pass(cl.objective(c, w * s.loss_scale), c + 1 < cl.num_chunks(), last_pass_of_step && c == 0);
          cl.collect(c);
        }
        loss = cl.loss();
      } else {
        loss = forward_loss(b, fo, nullptr);
        if (fault_point("loss", step + 1)) loss = mul_scalar(loss, std::nan(""));  // harness: a NaN loss
        backward_pass(mul_scalar(loss, w * s.loss_scale), false, last_pass_of_step);
      }
      if (!earlier.empty()) {
        add_in_front(earlier);
        earlier.clear();
      }
      have_grads = true;
      NoGradGuard ng;
      Tensor part = mul_scalar(cast(loss.detach(), DType::F32), w);
      loss_sum = loss_sum.defined() ? add(loss_sum, part) : part;
    }
    if (fault_point("grad", step + 1) && !params.empty()) {  // harness: one non-finite gradient (this rank's)
      Tensor g = grad(*params.back());
      if (g.defined()) g.fill_(std::nan(""));
    }
    if (sync) {
      if (last_used < 0) sync->arm();  // nothing to learn on this rank: it still adds its (zero) gradients
      sync->finish();
    }
    samples_seen += global;
    ++step;
    s.loss = loss_sum.defined() ? loss_sum.item() : 0.0;
    if (dist()) {  // the loss (each rank's share), the tokens, and the stop vote, in one collective
      // The loss is an f32 sum on one process; the f64 sum of two f32 shares rounded back to f32 is that same sum.
      // The vote counts the ranks that got each stop signal, so that all stop naming the same one (SIGINT before
      // SIGTERM before SIGHUP) and exit with the same code.
      const int sig = g_signal;
      double v[5] = {s.loss, static_cast<double>(s.tokens), sig == SIGINT ? 1.0 : 0.0, sig == SIGTERM ? 1.0 : 0.0,
                     sig == SIGHUP ? 1.0 : 0.0};
      cp->all_reduce_sum(v, 5, str("loss of step ", step));
      s.loss = static_cast<double>(static_cast<float>(v[0]));
      s.tokens = static_cast<int64_t>(v[1]);
      stop_vote = v[2] > 0 ? SIGINT : v[3] > 0 ? SIGTERM : v[4] > 0 ? SIGHUP : 0;
    }
    int64_t bad = -2;
    if (std::isfinite(s.loss)) {
      const optim::GradHealth health = optim::grad_health(params);  // one pass over the gradients unless one is bad
      bad = health.first_bad;
      if (bad == -1) {
        s.grad_norm = health.norm / s.loss_scale;
        if (!std::isfinite(s.grad_norm)) bad = -3;
      }
    }
    if (bad != -1) {
      s.skipped = true;
      s.nonfinite = bad == -2 ? "loss" : bad == -3 ? "global gradient norm" : named[bad].first + " (gradient)";
      s.grad_norm = std::nan("");
      scaler->update(false);
    } else {
      const double clip = optim::clip_factor(s.grad_norm, cfg.optimizer.grad_clip);
      s.lr = optim::lr_at(sched, static_cast<long>(opt->step_count()));
      const bool frozen = opt->step_count() < cfg.trainer.freeze_backbone_steps;
      auto& entries = opt->entries();
      for (size_t i = 0; i < entries.size(); ++i)
        entries[i].lr_scale = in_backbone[i] ? (frozen ? 0.0 : 1.0) : head_scale;
      opt->step(s.lr, clip / s.loss_scale);
      scaler->update(true);
    }
    model->zero_grad();
    return s;
  }

  // The validation data through the metrics of `mamba-train evaluate` (train/metrics.h): classifiers from their
  // logits (softmax and cross-entropy in double), language models from the fused loss and the token byte counts.
  // max_batches > 0 caps trainer.eval_batches (a quick look at the metrics the evaluation reports).
  EvalStats evaluate(int64_t max_batches = 0) {
    NoGradGuard ng;
    EvalStats e;
    e.classification = task->classification();
    const int64_t B = cfg.trainer.micro_batch_size;
    const int64_t nb = task->num_val_batches(B);
    const int64_t all = cfg.trainer.eval_batches == 0 ? nb : std::min(nb, cfg.trainer.eval_batches);
    const int64_t use = max_batches > 0 ? std::min(all, max_batches) : all;
    nn::ForwardOptions fo;
    fo.compute_dtype = cd;
    // Bits per byte of text for next-token prediction only (masked positions are not a text's bytes in order).
    e.lm.bytes = token_bytes.empty() || task->masked_lm() ? -1 : 0;
    data::CopyScore cs;
    std::unique_ptr<ClassificationEvaluator> ev;
    if (e.classification) ev = std::make_unique<ClassificationEvaluator>(class_labels());
    double nats = 0;
    std::vector<double> probs;
    for (int64_t k = 0; k < use; ++k) {
      const int64_t idx = use == nb ? k : k * nb / use;  // spread over the held-out data
      data::Batch b = task->val_batch(idx, B);
      const int64_t n = scored_count(b);
      if (n == 0) continue;
      if (e.classification) {
        fo.mask = b.mask.to(dev);
        const Tensor lg = cls->forward(b.ids.to(dev), fo).to(Device::cpu()).to(DType::F64).contiguous();
        const Tensor lb = b.labels.contiguous();
        const int64_t C = lg.size(1);
        const int64_t* lp = lb.data<int64_t>();
        probs.resize(static_cast<size_t>(C));
        for (int64_t i = 0; i < lg.size(0); ++i) {
          if (lp[i] == data::kIgnoreIndex) continue;
          const double* row = lg.data<double>() + i * C;
          nats += softmax_row(row, C, probs.data()) - row[lp[i]];
          ev->add(probs.data(), lp[i]);
        }
        continue;
      }
      fo.reset = resets_of(b);
      if (task->masked_lm()) {  // the masked loss, and the argmax at the masked positions, one row's logits at a time
        const Tensor hidden = lm->forward(b.ids.to(dev), fo, false, Tensor(), false).backbone.last_hidden_state;
        e.lm.nats += lm->masked_lm_loss(hidden, b.targets.to(dev), cd).item() * static_cast<double>(n);
        e.lm.n += n;
        const std::vector<int64_t> tg = b.targets.to_vector_i64();
        const int64_t L = hidden.size(1);
        for (int64_t r = 0; r < hidden.size(0); ++r) {
          const Tensor lg = lm->logits(slice(hidden, 0, r, r + 1), cd).to(Device::cpu()).to(DType::F32).contiguous();
          const float* lp = lg.data<float>();
          const int64_t V = lg.size(2);
          for (int64_t t = 0; t < L; ++t) {
            const int64_t want = tg[static_cast<size_t>(r * L + t)];
            if (want == data::kIgnoreIndex) continue;
            const float* row = lp + t * V;
            cs.correct += (std::max_element(row, row + V) - row) == want;
            ++cs.scored;
          }
        }
        continue;
      }
      Tensor logits;  // only selective copying reads them (an LM's [B, L, V] logits are large)
      const bool copy = task->reports_accuracy();
      const double loss = !copy && chunk_len() > 0
                              ? nn::chunked_lm_loss(*lm, b.ids.to(dev), b.targets.to(dev), chunk_len(), fo).item()
                              : forward_loss(b, fo, copy ? &logits : nullptr).item();
      e.lm.nats += loss * static_cast<double>(n);
      e.lm.n += n;
      if (e.lm.bytes >= 0) e.lm.bytes += target_bytes(b);
      if (copy) {
        data::CopyScore c = data::copy_score(logits, b);
        cs.correct += c.correct;
        cs.scored += c.scored;
      }
    }
    if (e.classification) {
      e.report = ev->report();
      e.n = e.report.n;
      e.loss = e.n > 0 ? nats / static_cast<double>(e.n) : std::nan("");
      e.accuracy = e.report.accuracy;
    } else {
      e.n = e.lm.n;
      e.loss = e.lm.loss();
      if (task->reports_accuracy() || task->masked_lm()) e.accuracy = cs.accuracy();
    }
    return e;
  }

  // Class names of the run (its labels' names, or the integers).
  std::vector<std::string> class_labels() const {
    std::vector<std::string> names = task->label_names();
    if (names.empty())
      for (int64_t k = 0; k < cfg.model.num_classes; ++k) names.push_back(std::to_string(k));
    return names;
  }

  // Bytes of text the scored targets of a language-model batch stand for (token_text_bytes).
  int64_t target_bytes(const data::Batch& b) const {
    const Tensor t = b.targets.contiguous();
    const int64_t rows = t.size(0), L = t.size(1);
    const int64_t* p = t.data<int64_t>();
    int64_t bytes = 0;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 1; j < L; ++j) {
        const int64_t id = p[i * L + j];
        if (id >= 0 && id < static_cast<int64_t>(token_bytes.size())) bytes += token_bytes[static_cast<size_t>(id)];
      }
    return bytes;
  }

  // Ranks an evaluation record by checkpoint.monitor (rank 0's value, so that every rank takes the same decisions).
  // True when a checkpoint of this step is needed (it entered the best checkpoint.keep_best).
  bool rank_evaluation(const nlohmann::json& eval) {
    double v = root() ? best.value_of(eval) : 0.0;
    if (dist()) {
      std::vector<uint8_t> b(sizeof v);
      std::memcpy(b.data(), &v, sizeof v);
      b = cp->broadcast(b, str("monitored value of step ", step));
      std::memcpy(&v, b.data(), sizeof v);
    }
    return best.update(step, v);
  }
  bool early_stopped() const {
    return cfg.trainer.early_stop_patience > 0 && best.enabled() &&
           best.evals_since_best() >= cfg.trainer.early_stop_patience;
  }
  std::string early_stop_reason() const {
    return str(cfg.checkpoint.monitor, " did not improve in ", best.evals_since_best(),
               " evaluations (trainer.early_stop_patience ", cfg.trainer.early_stop_patience, "; best ",
               best.has_best() ? str(best.best_value(), " at step ", best.best_step()) : std::string("none"), ")");
  }

  // Wall-clock seconds of the run: this process's so far plus those of the processes before the last resume.
  double elapsed_s() const {
    return elapsed_base + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  }

  std::string model_config_json() const { return nn_config_json(cfg.model.mamba); }
  static std::string nn_config_json(const MambaConfig& m) { return config_to_hf_json(m); }

  CheckpointData snapshot() const {
    CheckpointData d;
    for (const auto& e : opt->entries()) {
      d.tensors[kModelPrefix + e.name] = e.param->detach().to(Device::cpu());
      d.tensors[kAvgPrefix + e.name] = e.exp_avg.to(Device::cpu());
      d.tensors[kSqPrefix + e.name] = e.exp_avg_sq.to(Device::cpu());
    }
    d.ints["step"] = step;
    d.ints["samples_seen"] = samples_seen;
    d.ints["optim/step"] = opt->step_count();
    const optim::LossScalerState ss = scaler->state();
    d.floats["scaler/scale"] = ss.scale;
    d.ints["scaler/good_steps"] = ss.good_steps;
    d.ints["scaler/skipped_total"] = ss.skipped_total;
    d.ints["scaler/nonfinite_streak"] = ss.nonfinite_streak;
    d.ints["rng/seed"] = static_cast<int64_t>(gen.state().seed);
    d.ints["rng/offset"] = static_cast<int64_t>(gen.state().offset);
    d.ints["run/seed"] = static_cast<int64_t>(cfg.run.seed);
    d.ints["trainer/global_batch_size"] = cfg.trainer.global_batch_size;
    d.ints["distributed/world_size"] = env.world_size;  // informational: resuming with another world size is exact
    d.strings["config_yaml"] = dump_train_config(cfg);
    d.strings["model_config_json"] = model_config_json();
    d.strings["model_head"] = cfg.model.head;
    d.strings["data_fingerprint"] = task->fingerprint();
    const std::vector<std::string> names = task->label_names();
    if (!names.empty()) d.strings["label_names"] = nlohmann::json(names).dump();  // evaluate / predict / export
    d.floats["log/window_loss_sum"] = log_loss_sum;
    d.ints["log/window_steps"] = log_steps;
    if (ss.nonfinite_streak > 0) d.strings["last_good_checkpoint"] = last_good_checkpoint;
    d.floats["run/elapsed_s"] = elapsed_s();
    if (best.enabled()) d.strings["best/state"] = best.state();
    d.strings["mamba_train/version"] = version();
    d.strings["mamba_train/commit"] = git_commit();
    return d;
  }

  // Rank 0 writes; the others wait on the control plane's barrier (a CPU-side wait with the timeout, never inside
  // a GPU collective) and learn the path, so that every rank names the same last checkpoint.
  std::string save() {
    const bool in_streak = scaler->state().nonfinite_streak > 0;
    if (root()) {
      // Retention keeps the best checkpoints, and during a non-finite streak the last one from before it.
      std::vector<int64_t> keep = best.steps();
      if (in_streak && !last_good_checkpoint.empty())
        keep.push_back(checkpoint_step_from_name(std::filesystem::path(last_good_checkpoint).filename().string()));
      last_checkpoint = save_checkpoint(cfg.checkpoint.dir, step, snapshot(), cfg.checkpoint.keep_last, keep);
      if (best.has_best() && best.best_step() != best_pointer_step) {
        write_best_pointer(cfg.checkpoint.dir, best.best_step());
        best_pointer_step = best.best_step();
      }
    }
    if (dist()) {
      std::vector<uint8_t> b(last_checkpoint.begin(), last_checkpoint.end());
      b = cp->broadcast(b, str("checkpoint of step ", step, " written by rank 0"));
      last_checkpoint.assign(b.begin(), b.end());
    }
    if (!in_streak) last_good_checkpoint = last_checkpoint;
    return last_checkpoint;
  }

  void resume(const std::string& path) {
    CheckpointData d = load_checkpoint(path);
    auto fail = [&](const std::string& why) {
      throw Error(ErrorKind::Checkpoint, str("checkpoint '", path, "': ", why));
    };
    auto need_str = [&](const char* k) -> const std::string& {
      auto it = d.strings.find(k);
      if (it == d.strings.end()) fail(str("not a mamba-train training checkpoint: no '", k, "'"));
      return it->second;
    };
    auto need_int = [&](const char* k) -> int64_t {
      auto it = d.ints.find(k);
      if (it == d.ints.end()) fail(str("not a mamba-train training checkpoint: no '", k, "'"));
      return it->second;
    };
    // The model first: a different architecture is named key by key before any tensor is compared.
    const std::string mc = need_str("model_config_json");
    if (mc != model_config_json()) fail(str("model differs from the config: ", json_diff(mc, model_config_json())));
    if (need_str("model_head") != cfg.model.head)
      fail(str("model.head: checkpoint ", d.strings["model_head"], ", config ", cfg.model.head));
    if (need_str("data_fingerprint") != task->fingerprint())
      fail(str("trained on other data: checkpoint ", d.strings["data_fingerprint"], ", config ", task->fingerprint(),
               " (resume needs the same data.* so that the data position means the same samples)"));
    if (need_int("run/seed") != static_cast<int64_t>(cfg.run.seed))
      fail(str("run.seed: checkpoint ", d.ints["run/seed"], ", config ", cfg.run.seed,
               " (the data order depends on it)"));
    std::map<std::string, Tensor> model_t, avg_t, sq_t;
    for (auto& kv : d.tensors) {
      const std::string& n = kv.first;
      auto take = [&](const char* prefix, std::map<std::string, Tensor>& m) {
        const size_t pl = std::strlen(prefix);
        if (n.compare(0, pl, prefix) != 0) return false;
        m[n.substr(pl)] = kv.second;
        return true;
      };
      if (!take(kModelPrefix, model_t) && !take(kAvgPrefix, avg_t) && !take(kSqPrefix, sq_t))
        fail(str("unexpected tensor '", n, "'"));
    }
    model->load_state_dict(model_t, true, str("checkpoint '", path, "'"));
    for (auto& e : opt->entries()) {
      for (auto* pm : {&avg_t, &sq_t}) {
        const char* what = pm == &avg_t ? kAvgPrefix : kSqPrefix;
        auto it = pm->find(e.name);
        if (it == pm->end()) fail(str("missing tensor '", what, e.name, "'"));
        if (it->second.shape() != e.param->shape())
          fail(str("size mismatch for ", what, e.name, ": checkpoint ", shape_str(it->second.shape()), ", model ",
                   shape_str(e.param->shape())));
        Tensor& dst = pm == &avg_t ? e.exp_avg : e.exp_avg_sq;
        dst.copy_(it->second);
      }
    }
    if (avg_t.size() != opt->entries().size() || sq_t.size() != opt->entries().size())
      fail("optimizer moments name parameters the model does not have");
    step = need_int("step");
    samples_seen = need_int("samples_seen");
    auto ws = d.ints.find("distributed/world_size");
    if (ws != d.ints.end() && ws->second != env.world_size)
      std::printf(
          "note: %s was written by a job of %lld rank(s), this one has %d: the data order follows the global "
          "sample index, so the run continues exactly (up to the summation order of the gradients)\n",
          path.c_str(), (long long)ws->second, env.world_size);
    const int64_t ostep = need_int("optim/step");
    if (step < 0 || samples_seen < 0 || ostep < 0 || ostep > step) fail("inconsistent step counters");
    opt->set_step_count(ostep);
    optim::LossScalerState ss;
    auto fit = d.floats.find("scaler/scale");
    if (fit == d.floats.end()) fail("not a mamba-train training checkpoint: no 'scaler/scale'");
    ss.scale = fit->second;
    ss.good_steps = need_int("scaler/good_steps");
    ss.skipped_total = need_int("scaler/skipped_total");
    ss.nonfinite_streak = need_int("scaler/nonfinite_streak");
    if (scaler->enabled()) {
      scaler->set_state(ss);
    } else {
      ss.scale = scaler->state().scale;  // bf16 / fp32 (or a precision change): only the counters carry over
      scaler->set_state(ss);
    }
    GeneratorState gs;
    gs.seed = static_cast<uint64_t>(need_int("rng/seed"));
    gs.offset = static_cast<uint64_t>(need_int("rng/offset"));
    gen.set_state(gs);
    auto el = d.floats.find("run/elapsed_s");  // absent in checkpoints written before it existed
    elapsed_base = el != d.floats.end() && std::isfinite(el->second) && el->second >= 0 ? el->second : 0.0;
    auto bs = d.strings.find("best/state");
    best_restored = bs != d.strings.end() && best.restore(bs->second);
    resumed_config_yaml = need_str("config_yaml");
    last_checkpoint = path;
    // Checkpoints written before these keys existed: an empty window, and the checkpoint itself as the last good one.
    auto lg = d.strings.find("last_good_checkpoint");
    last_good_checkpoint = ss.nonfinite_streak > 0 && lg != d.strings.end() ? lg->second : path;
    auto wl = d.floats.find("log/window_loss_sum");
    auto wn = d.ints.find("log/window_steps");
    log_loss_sum = wl != d.floats.end() ? wl->second : 0.0;
    log_steps = wn != d.ints.end() ? wn->second : 0;
    if (log_steps < 0 || !std::isfinite(log_loss_sum)) fail("inconsistent logging window");
  }
};

Trainer::Trainer(const TrainConfig& cfg, const TrainerOptions& opt)
    : impl_(std::make_unique<Impl>(cfg, opt.write_outputs, opt.env)) {}
Trainer::~Trainer() = default;
StepStats Trainer::train_step() { return impl_->train_step(); }
EvalStats Trainer::evaluate() { return impl_->evaluate(); }
std::string Trainer::save_checkpoint_now() { return impl_->save(); }
void Trainer::resume_from(const std::string& path) { impl_->resume(path); }
int64_t Trainer::step() const { return impl_->step; }
int64_t Trainer::num_parameters() const { return impl_->model->num_parameters(); }
Device Trainer::device() const { return impl_->dev; }
const TrainConfig& Trainer::config() const { return impl_->cfg; }

namespace {

// The eval record of metrics.jsonl: evaluate's metrics (train/metrics.h to_json), with the mean cross-entropy
// first for classifiers too (the validation loss curve) and the copy accuracy of selective copying.
nlohmann::ordered_json eval_json(const EvalStats& e) {
  nlohmann::ordered_json j;
  if (e.classification) {
    j["loss"] = std::isfinite(e.loss) ? nlohmann::ordered_json(e.loss) : nlohmann::ordered_json(nullptr);
    const nlohmann::ordered_json metrics = to_json(e.report);
    for (auto it = metrics.begin(); it != metrics.end(); ++it) j[it.key()] = it.value();
    return j;
  }
  j = to_json(e.lm);
  if (e.accuracy >= 0) j["accuracy"] = e.accuracy;
  return j;
}

std::string eval_line(int64_t step, const EvalStats& e) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "eval step %lld: loss %.4f", (long long)step, e.loss);
  std::string s = buf;
  if (e.classification) {
    const ClassificationReport& r = e.report;
    std::snprintf(buf, sizeof buf, "  accuracy %.4f  F1 %.4f  MCC %.4f", r.accuracy, r.f1, r.mcc);
    s += buf;
    if (r.labels.size() == 2) {
      std::snprintf(buf, sizeof buf, "  ROC AUC %.4f", r.roc_auc);
      s += buf;
    }
  } else {
    std::snprintf(buf, sizeof buf, "  perplexity %.3f", e.lm.perplexity());
    s += buf;
    if (e.lm.bytes >= 0) {
      std::snprintf(buf, sizeof buf, "  bits/byte %.4f", e.lm.bits_per_byte());
      s += buf;
    }
    if (e.accuracy >= 0) {
      std::snprintf(buf, sizeof buf, "  accuracy %.4f", e.accuracy);
      s += buf;
    }
  }
  return s + str("  n=", e.n);
}

// A resumed run repeats the steps after its checkpoint: their old records (written by the process that went on
// past the checkpoint before it stopped) are dropped so that every step appears once.
void drop_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  std::string line, kept;
  bool dropped = false;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
                             j["step"].get<int64_t>() > step)) {  // later steps, or a line cut by a crash
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  if (dropped) write_file_atomic(path, kept.data(), kept.size());
}

// Re-reads the metrics file (the whole run, across resumes) for the loss plot.
void plot_from_metrics(const std::string& metrics, const std::string& svg, const std::string& title) {
  std::ifstream in(metrics);
  std::vector<std::pair<int64_t, double>> tr, va;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    const int64_t st = j["step"].get<int64_t>();
    if (j.contains("loss") && j["loss"].is_number()) tr.emplace_back(st, j["loss"].get<double>());
    if (j.contains("eval") && j["eval"].is_object() && j["eval"].contains("loss") && j["eval"]["loss"].is_number())
      va.emplace_back(st, j["eval"]["loss"].get<double>());
  }
  write_loss_svg(svg, tr, va, title);
}

}  // namespace

RunResult Trainer::run(const RunOptions& ro) {
  Impl& m = *impl_;
  const TrainConfig& c = m.cfg;
  RunResult res;
  std::printf("mamba-train: run '%s' -> %s\n", c.run.name.c_str(), c.run.out_dir.c_str());
  if (m.dist())
    std::printf("distributed: %d ranks, gradients over %s in %d bucket(s) of %.0f MiB, timeout %.0f s\n",
                m.env.world_size, m.sync->backend_name().c_str(), m.sync->num_buckets(), c.distributed.bucket_mb,
                c.distributed.timeout_s);
  std::printf("data: %s\n", m.task->describe().c_str());
  if (m.lm && m.task->eod_id() >= 0)
    std::printf("documents: end-of-document token %lld; %s\n", (long long)m.task->eod_id(),
                c.data.reset_at_document_end ? "every layer's state restarts after it (data.reset_at_document_end)"
                                             : "states carry across it (data.reset_at_document_end false)");
  const int64_t epoch_samples = m.task->epoch_samples();
  std::printf(
      "model: d_model %lld, %lld layers, d_state %lld, vocab %lld, %lld parameters; device %s, %s; batch %lld "
      "(%lld x %lld micro) x %lld tokens, %lld steps%s\n",
      (long long)c.model.mamba.d_model, (long long)c.model.mamba.n_layer, (long long)c.model.mamba.d_state,
      (long long)c.model.mamba.vocab_size, (long long)m.model->num_parameters(), m.dev.str().c_str(),
      c.trainer.precision.c_str(), (long long)c.trainer.global_batch_size, (long long)m.accum(),
      (long long)c.trainer.micro_batch_size, (long long)c.data.seq_len, (long long)m.total_steps,
      c.trainer.epochs > 0
          ? str(" (", schema::format_double(c.trainer.epochs), " epochs of ", epoch_samples, " samples)").c_str()
          : "");
  if (c.model.dropout > 0 || c.model.classifier_dropout > 0)
    std::printf("dropout (training only): %s in the blocks, %s on the classifier's input\n",
                schema::format_double(c.model.dropout).c_str(),
                schema::format_double(c.model.classifier_dropout).c_str());

  // Resume: rank 0 decides which checkpoint (if any); every rank then reads that one.
  std::string from;
  if (m.root()) {
    std::vector<std::string> warnings;
    from = checkpoint_to_resume(c, &warnings);
    for (const std::string& w : warnings) std::printf("warning: %s\n", w.c_str());
  }
  if (m.dist()) {
    std::vector<uint8_t> b(from.begin(), from.end());
    b = m.cp->broadcast(b, "checkpoint to resume from");
    from.assign(b.begin(), b.end());
  }
  std::vector<ConfigChange> changes;
  if (!from.empty()) {
    m.resume(from);
    std::printf("resumed from %s at step %lld (%lld samples seen)\n", from.c_str(), (long long)m.step,
                (long long)m.samples_seen);
    for (const std::string& note : keep_pre_key_behaviour(m.cfg, m.resumed_config_yaml))
      std::printf("%s\n", note.c_str());
    changes = config_changes(m.resumed_config_yaml, c);
    std::vector<ConfigChange> refused;
    for (const ConfigChange& ch : changes)
      if (!ch.allowed) refused.push_back(ch);
    MT_CHECK(refused.empty() || ro.accept_config_change, ErrorKind::Config, "resuming ", from,
             ": the config differs from the checkpoint's in ", describe_changes(refused),
             " (pass --accept-config-change to resume anyway, or start a new run with another run.name / "
             "run.out_dir)");
    if (!changes.empty()) std::printf("config changes since the checkpoint: %s\n", describe_changes(changes).c_str());
  }
  m.check_replicas(from.empty() ? "after initialisation" : "after the resume");
  MT_CHECK(m.step <= m.total_steps, ErrorKind::Config, c.trainer.epochs > 0 ? "trainer.epochs" : "trainer.max_steps",
           ": the run's ", m.total_steps, " steps are fewer than the step of the checkpoint resumed from (", m.step,
           ", ", from, ")");
  if (ro.stop_at_step > 0 && m.step >= ro.stop_at_step) {  // a re-run of a planned stop: nothing to do
    std::printf("already at step %lld, at or past --stop-at-step %lld: nothing to do\n", (long long)m.step,
                (long long)ro.stop_at_step);
    res.step = m.step;
    res.last_checkpoint = m.last_checkpoint;
    return res;
  }
  if (m.early_stopped()) {  // a re-run of a run that stopped early: nothing to do
    std::printf("the run stopped early at step %lld: %s; nothing to do (raise trainer.early_stop_patience to go on)\n",
                (long long)m.step, m.early_stop_reason().c_str());
    res.step = m.step;
    res.last_checkpoint = m.last_checkpoint;
    res.early_stopped = true;
    return res;
  }
  if (m.best.enabled()) {  // a monitor the evaluation record lacks is an error now, not after the first evaluation
    MT_CHECK(m.task->num_val_batches(c.trainer.micro_batch_size) > 0, ErrorKind::Config, "checkpoint.monitor ",
             c.checkpoint.monitor, " needs validation data (the data has no held-out part)");
    m.best.value_of(eval_json(m.evaluate(1)));
  }

  if (m.write_outputs) {
    const std::string config_file = write_run_config(c, !from.empty());
    append_start_record(c, {{"version", version()},
                            {"commit", git_commit()},
                            {"command", command_line()},
                            {"device", m.dev.str()},
                            {"gpu", device_name(m.dev)},
                            {"world_size", m.env.world_size},
                            {"step", m.step},
                            {"resumed_from", from},
                            {"config", config_file}});
    if (!m.best_restored) remove_best_pointer(c.checkpoint.dir);  // it ranked by another (or no) monitor
    remove_temp_files_of_earlier_processes(c.run.out_dir);        // a run killed while rewriting a file here
  }
  if (!from.empty() && m.write_outputs) drop_metrics_after(c.logging.metrics_file, m.step);
  std::unique_ptr<MetricsLog> metrics_log;  // rank 0 only
  if (m.root()) metrics_log = std::make_unique<MetricsLog>(c.logging.metrics_file, /*append=*/!from.empty());
  auto epoch = [&]() { return epoch_samples > 0 ? static_cast<double>(m.samples_seen) / epoch_samples : -1.0; };
  auto log_metrics = [&](nlohmann::json j) {
    if (epoch_samples > 0) j["epoch"] = epoch();
    j["elapsed_s"] = m.elapsed_s();
    if (metrics_log) metrics_log->write(j);
  };
  if (!changes.empty()) {
    nlohmann::json list = nlohmann::json::array();
    for (const ConfigChange& ch : changes)
      list.push_back({{"key", ch.key}, {"old", ch.before}, {"new", ch.after}, {"free", ch.allowed}});
    log_metrics({{"step", m.step},
                 {"event", "config_change"},
                 {"changes", list},
                 {"accept_config_change", ro.accept_config_change}});
  }
  Progress progress(m.total_steps, c.logging.progress, m.step);
  SignalScope signals;

  double win_tokens = 0;  // tokens and time since the last log record (throughput: this process only)
  auto win_t0 = std::chrono::steady_clock::now();
  const auto run_t0 = win_t0;
  const int64_t first_step = m.step;
  while (m.step < m.total_steps) {
    const StepStats s = m.train_step();
    fault_point("step_end", m.step);
    if (s.skipped) {
      const optim::LossScalerState ss = m.scaler->state();
      progress.message(str("step ", m.step, ": skipped (non-finite ", s.nonfinite, "); loss scale now ",
                           m.scaler->scale(), "; ", ss.nonfinite_streak, " in a row"));
      if (ss.nonfinite_streak >= c.trainer.max_nonfinite_steps) {
        progress.finish();
        const std::string& good = m.last_good_checkpoint;
        const char* note = m.last_checkpoint == good ? ""
                           : good.empty()            ? " (every checkpoint was saved during the streak)"
                                                     : " (the checkpoints after it were saved during the streak)";
        throw Error(ErrorKind::NonFinite,
                    str("training stopped at step ", m.step, " after ", ss.nonfinite_streak,
                        " consecutive non-finite steps (trainer.max_nonfinite_steps); first non-finite tensor: ",
                        s.nonfinite, "; last good checkpoint: ", good.empty() ? std::string("none") : good, note));
      }
    } else {
      m.log_loss_sum += s.loss;
      ++m.log_steps;
    }
    win_tokens += static_cast<double>(s.tokens);
    const bool last = m.step == m.total_steps;
    if (m.step % c.trainer.log_every == 0 || last) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - win_t0).count();
      const double tps = secs > 0 ? win_tokens / secs : 0;
      const double loss = m.log_steps > 0 ? m.log_loss_sum / static_cast<double>(m.log_steps) : std::nan("");
      progress.set_epoch(epoch());
      progress.update(m.step, loss, s.lr, s.grad_norm, s.loss_scale, tps, m.scaler->state().skipped_total);
      log_metrics({{"step", m.step},
                   {"loss", loss},
                   {"lr", s.lr},
                   {"grad_norm", s.grad_norm},
                   {"loss_scale", s.loss_scale},
                   {"tokens_per_s", tps},
                   {"samples_seen", m.samples_seen},
                   {"skipped_total", m.scaler->state().skipped_total}});
      m.log_loss_sum = win_tokens = 0;
      m.log_steps = 0;
      win_t0 = std::chrono::steady_clock::now();
    }
    bool need_best = false, stop_early = false;
    if ((c.trainer.eval_every > 0 && m.step % c.trainer.eval_every == 0) || last) {
      const EvalStats e = m.evaluate();
      progress.message(eval_line(m.step, e));
      nlohmann::json rec = {{"step", m.step}, {"eval", eval_json(e)}};
      if (m.best.enabled()) {
        need_best = m.rank_evaluation(rec["eval"]);
        stop_early = m.early_stopped();
        if (m.best.improved()) {
          rec["best"] = true;
          progress.message(str("new best ", c.checkpoint.monitor, " ", m.best.best_value(), " at step ", m.step));
        }
      }
      log_metrics(rec);
      if (last) res.final_eval = e;
      win_t0 = std::chrono::steady_clock::now();  // evaluation time is not training throughput
    }
    // A signal stops the run after this step. Ranks act on the vote taken in the step's last collective (a signal
    // that arrives later counts at the next step), so that every rank stops at the same step.
    const int sig = m.dist() ? m.stop_vote : static_cast<int>(g_signal);
    const bool stop_now = ro.stop_at_step > 0 && m.step == ro.stop_at_step;
    if (m.outputs_requested && ((c.checkpoint.every > 0 && m.step % c.checkpoint.every == 0) || last || stop_now ||
                                sig != 0 || need_best || stop_early)) {
      const std::string p = m.save();
      progress.message(str("checkpoint saved: ", p));
    }
    if (sig != 0) {
      progress.finish();
      std::printf("stopped by %s at step %lld; resume with the same command\n", signal_name(sig), (long long)m.step);
      res.exit_code = 128 + sig;
      break;
    }
    if (stop_early) {
      progress.finish();
      std::printf("stopped early at step %lld: %s\n", (long long)m.step, m.early_stop_reason().c_str());
      log_metrics({{"step", m.step},
                   {"event", "early_stop"},
                   {"monitor", c.checkpoint.monitor},
                   {"best_step", m.best.best_step()},
                   {"best_value", m.best.best_value()}});
      res.early_stopped = true;
      break;
    }
    if (stop_now) {
      progress.finish();
      std::printf("stopped at step %lld (--stop-at-step); resume with the same command\n", (long long)m.step);
      break;
    }
  }
  progress.finish();
  if (first_step == m.total_steps) {  // resumed a finished run: report where it stands
    res.final_eval = m.evaluate();
    std::printf("already at the last step (%lld); %s\n", (long long)m.step, eval_line(m.step, res.final_eval).c_str());
  }
  res.step = m.step;
  res.last_checkpoint = m.last_checkpoint;
  if (m.write_outputs && c.logging.plot) {
    const std::string svg = c.run.out_dir + "/loss.svg";
    plot_from_metrics(c.logging.metrics_file, svg, str(c.run.name, ": loss"));
    std::printf("loss curve: %s\n", svg.c_str());
  }
  if (m.best.has_best())
    std::printf("best %s: %g at step %lld (%s)\n", c.checkpoint.monitor.c_str(), m.best.best_value(),
                (long long)m.best.best_step(),
                (c.checkpoint.dir + "/" + checkpoint_file_name(m.best.best_step())).c_str());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_t0).count();
  std::printf("done: %lld steps in this process (%.1f s); step %lld of %lld\n", (long long)(m.step - first_step), secs,
              (long long)m.step, (long long)m.total_steps);
  if (m.step == m.total_steps) {
    MT_CHECK(std::isfinite(res.final_eval.loss) || m.task->num_val_batches(c.trainer.micro_batch_size) == 0,
             ErrorKind::NonFinite, "training ended with a non-finite validation loss (", res.final_eval.loss, ")");
  }
  return res;
}

}  // namespace mt::train

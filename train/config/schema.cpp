// THE table of YAML config keys: path, type, range, default (from train/config/config.h's initialisers, except
// model.vocab_size = 0), one-line doc. Adding a field to TrainConfig means adding one line here; configs/README.md is
// regenerated from this table (tests/test_config_yaml.cpp fails until it is: MT_UPDATE_CONFIG_README=1 rewrites it).
#include "train/config/schema.h"

#include <cctype>
#include <charconv>
#include <type_traits>
#include <utility>

#include "core/error.h"

namespace mt::train::schema {
namespace {

Value read(int64_t x) {
  Value v;
  v.i = x;
  return v;
}
Value read(uint64_t x) { return read(static_cast<int64_t>(x)); }
Value read(double x) {
  Value v;
  v.f = x;
  return v;
}
Value read(bool x) {
  Value v;
  v.b = x;
  return v;
}
Value read(const std::string& x) {
  Value v;
  v.s = x;
  return v;
}
Value read(const std::vector<std::string>& x) {
  Value v;
  v.list = x;
  return v;
}
void assign(int64_t& x, const Value& v) { x = v.i; }
void assign(uint64_t& x, const Value& v) { x = static_cast<uint64_t>(v.i); }  // the range keeps it >= 0
void assign(double& x, const Value& v) { x = v.f; }
void assign(bool& x, const Value& v) { x = v.b; }
void assign(std::string& x, const Value& v) { x = v.s; }
void assign(std::vector<std::string>& x, const Value& v) { x = v.list; }
// Enum fields hold the enum; the schema's one_of() lists the spellings, so assign never sees another word.
Value read(NormKind x) { return read(std::string(norm_kind_name(x))); }
Value read(DtInit x) { return read(std::string(dt_init_name(x))); }
void assign(NormKind& x, const Value& v) { MT_ASSERT(parse_norm_kind(v.s, &x), "model.norm: ", v.s); }
void assign(DtInit& x, const Value& v) { MT_ASSERT(parse_dt_init(v.s, &x), "model.dt_init: ", v.s); }
Value read(BiWeights x) { return read(std::string(bi_weights_name(x))); }
void assign(BiWeights& x, const Value& v) {
  MT_ASSERT(parse_bi_weights(v.s, &x), "model.bidirectional_weights: ", v.s);
}

template <class T>
constexpr Type type_of() {
  if (std::is_same<T, std::vector<std::string>>::value) return Type::List;
  if (std::is_same<T, bool>::value) return Type::Bool;
  if (std::is_integral<T>::value) return Type::Int;
  if (std::is_floating_point<T>::value) return Type::Float;
  return Type::String;
}

// Key builder: K("optimizer.lr", F(optimizer.lr)).gt(0).doc("...").
struct K {
  Key k;
  template <class Ref>
  K(const char* path, Ref ref) {
    using T = std::remove_reference_t<decltype(ref(std::declval<TrainConfig&>()))>;
    k.path = path;
    k.type = type_of<T>();
    // get only reads through the reference, so the const_cast never writes to a const object.
    k.get = [ref](const TrainConfig& c) { return read(ref(const_cast<TrainConfig&>(c))); };
    k.set = [ref](TrainConfig& c, const Value& v) { assign(ref(c), v); };
  }
  K&& ge(double x) && {
    k.has_lo = true;
    k.lo = x;
    return std::move(*this);
  }
  K&& gt(double x) && {
    k.has_lo = true;
    k.lo_open = true;
    k.lo = x;
    return std::move(*this);
  }
  K&& le(double x) && {
    k.has_hi = true;
    k.hi = x;
    return std::move(*this);
  }
  K&& lt(double x) && {
    k.has_hi = true;
    k.hi_open = true;
    k.hi = x;
    return std::move(*this);
  }
  K&& one_of(std::vector<std::string> c) && {
    k.type = Type::Enum;
    k.choices = std::move(c);
    return std::move(*this);
  }
  K&& note(const char* n) && {
    k.default_note = n;
    return std::move(*this);
  }
  K&& check(std::function<std::string(const Value&)> f) && {
    k.check = std::move(f);
    return std::move(*this);
  }
  K&& doc(const char* d) && {
    k.doc = d;
    return std::move(*this);
  }
  operator Key() && { return std::move(k); }
};

#define F(expr) \
  [](TrainConfig & c) -> auto& { return c.expr; }

std::string not_empty(const Value& v) { return v.s.empty() ? "must not be empty" : ""; }

// Class names: non-empty, distinct, no control characters (they become JSON keys and CSV column names).
std::string label_names(const Value& v) {
  for (size_t i = 0; i < v.list.size(); ++i) {
    const std::string& n = v.list[i];
    if (n.empty()) return str("name ", i + 1, " is empty");
    for (unsigned char c : n)
      if (c < 0x20 || c == 0x7f) return str("name ", i + 1, " holds a control character");
    for (size_t k = 0; k < i; ++k)
      if (v.list[k] == n) return str("'", n, "' is listed twice");
  }
  return "";
}

std::string monitor_name(const Value& v) {
  if (v.s.empty() || (v.s.rfind("eval.", 0) == 0 && v.s.size() > 5)) return "";
  return str("expected eval.<key> of the evaluation record (eval.loss, eval.accuracy, eval.mcc, ...) or \"\", got '",
             v.s, "'");
}

std::string device_name(const Value& v) {
  const std::string& s = v.s;
  if (s == "auto" || s == "cpu" || s == "cuda") return "";
  if (s.compare(0, 5, "cuda:") == 0 && s.size() > 5 && s.size() < 9 &&
      s.find_first_not_of("0123456789", 5) == std::string::npos) {
    return "";
  }
  return str("expected auto, cpu, cuda or cuda:N (N a GPU index), got '", s, "'");
}

// Upper bounds on sizes: far beyond any real model, low enough that size arithmetic (d_inner = expand * d_model,
// copy_vocab + 2, batch * seq_len, parameter counts) cannot overflow int64.
constexpr double kMaxSmall = 65536;       // 2^16: layers, state size, conv width, expand
constexpr double kMaxWidth = 16777216;    // 2^24: d_model, d_inner, dt_rank
constexpr double kMaxCount = 1073741824;  // 2^30: vocabulary, classes, sequence length, batch sizes, samples

std::vector<Key> build() {
  return {
      // ---- run ----
      K("run.name", F(run.name)).check(not_empty).doc("name of the run; the output directory defaults to runs/<name>"),
      K("run.out_dir", F(run.out_dir))
          .note("runs/<run.name>")
          .doc("directory for the resolved config, metrics, loss plot and checkpoints (created if missing)"),
      K("run.seed", F(run.seed)).ge(0).doc("seed of the parameter init and of the training data order"),
      K("run.device", F(run.device))
          .check(device_name)
          .doc("auto (CUDA when a GPU is visible, else CPU), cpu, cuda or cuda:N"),
      K("run.deterministic", F(run.deterministic))
          .doc("use deterministic GPU reductions (no atomics) where such a path exists: bit-exact GPU resume"),
      // ---- model ----
      K("model.variant", F(model.variant))
          .one_of({"", "130m", "370m", "790m", "1.4b", "2.8b"})
          .doc("published size to start from (d_model, n_layer, ...); model keys set below override it; "
               "vocab_size still comes from the data unless set"),
      K("model.d_model", F(model.mamba.d_model)).ge(1).le(kMaxWidth).doc("model width D"),
      K("model.n_layer", F(model.mamba.n_layer)).ge(1).le(kMaxSmall).doc("number of Mamba blocks"),
      K("model.d_state", F(model.mamba.d_state)).ge(1).le(kMaxSmall).doc("SSM state size N per channel"),
      K("model.d_conv", F(model.mamba.d_conv))
          .ge(1)
          .le(kMaxSmall)
          .doc("kernel width K of the causal depthwise convolution"),
      K("model.expand", F(model.mamba.expand)).ge(1).le(kMaxSmall).doc("d_inner = expand * d_model when d_inner is 0"),
      K("model.d_inner", F(model.mamba.d_inner))
          .ge(0)
          .le(kMaxWidth)
          .doc("inner width of the block; 0 = expand * d_model"),
      K("model.dt_rank", F(model.mamba.dt_rank))
          .ge(0)
          .le(kMaxWidth)
          .doc("rank of the dt projection; 0 = ceil(d_model / 16)"),
      K("model.vocab_size", F(model.mamba.vocab_size))
          .ge(0)
          .le(kMaxCount)
          .doc("embedding rows; 0 = the data's vocabulary (byte tokenizer: 256; dna: 7; selective_copying: copy_vocab "
               "+ 2)"),
      K("model.dt_min", F(model.mamba.dt_min)).gt(0).doc("smallest initial step size dt (log-uniform init)"),
      K("model.dt_max", F(model.mamba.dt_max)).gt(0).doc("largest initial step size dt; must be >= dt_min"),
      K("model.dt_init_floor", F(model.mamba.dt_init_floor)).ge(0).doc("lower clamp of the initial dt"),
      K("model.dt_scale", F(model.mamba.dt_scale)).gt(0).doc("scale of the dt_proj weight init"),
      K("model.dt_init", F(model.mamba.dt_init))
          .one_of({"random", "constant"})
          .doc("dt_proj weight init: uniform in +-dt_rank^-0.5*dt_scale, or that constant"),
      K("model.conv_bias", F(model.mamba.conv_bias)).doc("bias on the causal convolution"),
      K("model.proj_bias", F(model.mamba.proj_bias)).doc("bias on in_proj and out_proj"),
      K("model.norm_eps", F(model.mamba.norm_eps)).gt(0).doc("epsilon of the normalisation layers"),
      K("model.norm", F(model.mamba.norm)).one_of({"rmsnorm", "layernorm"}).doc("normalisation before each block"),
      K("model.residual_in_fp32", F(model.mamba.residual_in_fp32))
          .doc("keep the residual stream in fp32 under bf16 / fp16 precision"),
      K("model.tie_embeddings", F(model.mamba.tie_embeddings)).doc("the LM head shares the embedding matrix"),
      K("model.bidirectional", F(model.mamba.bidirectional))
          .doc("also scan the reversed sequence and add the two outputs (Caduceus' BiMamba; the model sees the "
               "future, so it trains classification heads)"),
      K("model.bidirectional_weights", F(model.mamba.bidirectional_weights))
          .one_of({"caduceus", "shared"})
          .doc("bidirectional layers: caduceus = the reverse direction has its own conv, x_proj, dt_proj, A_log and D "
               "(mixer.reverse.*) and shares in_proj and out_proj; shared = every mixer weight shared (the variant "
               "of checkpoints written before this key existed: resume those with shared)"),
      K("model.rc_equivariant", F(model.mamba.rc_equivariant))
          .doc("DNA: reverse-complement equivariance by parameter sharing (Caduceus-PS): the model reads both strands "
               "with the same weights, the per-token output of a sequence's reverse complement is the reverse "
               "complement of its output, and a mean / max pooled classifier gives both the same prediction. Twice "
               "the compute of a step; an alternative to data.rc_augment"),
      K("model.initializer_range", F(model.mamba.initializer_range)).ge(0).doc("std of the embedding init"),
      K("model.head", F(model.head))
          .one_of({"lm", "sequence_classification", "token_classification"})
          .doc("output head: next-token LM, one label per sequence, or one label per token"),
      K("model.num_classes", F(model.num_classes))
          .ge(1)
          .le(kMaxCount)
          .doc("classes of a classification head (>= 2 with sequence_classification / token_classification)"),
      K("model.pooling", F(model.pooling))
          .one_of({"mean", "max", "last", "state"})
          .doc("how sequence_classification pools the sequence"),
      K("model.dropout", F(model.dropout))
          .ge(0)
          .lt(1)
          .doc("training only: dropout on each block's mixer output before it joins the residual stream (inverted: "
               "kept values scaled by 1 / (1 - p)); masks drawn per micro-batch from run.seed and its first sample, "
               "so they do not depend on the number of ranks and a resumed run draws the same ones; 0 = off"),
      K("model.classifier_dropout", F(model.classifier_dropout))
          .ge(0)
          .lt(1)
          .doc("training only: dropout on a classification head's input (the pooled features of "
               "sequence_classification, each token's hidden state for token_classification); 0 = off"),
      K("model.init_from", F(model.init_from))
          .doc("weights to start from: a HuggingFace directory (config.json + model.safetensors or sharded "
               "model-*.safetensors with model.safetensors.index.json; f32 / bf16 / f16), a run directory (its newest "
               "valid checkpoint) or a checkpoint file; the model's dimensions come from it (model keys given must "
               "agree); a classifier's head is loaded too when its shape and pooling match; an embedding smaller than "
               "the tokenizer is extended; \"\" = random init"),
      // ---- tokenizer ----
      K("tokenizer.kind", F(tokenizer.kind))
          .one_of({"byte", "dna", "bpe"})
          .doc("byte: every byte is a token (vocabulary 256); dna: A C G T N + [PAD] [EOD] (vocabulary 7, data/dna.h); "
               "bpe: byte-level BPE from tokenizer.path (data/bpe.h; GPT-NeoX: vocabulary 50281, ids as HuggingFace "
               "tokenizers gives them)"),
      K("tokenizer.path", F(tokenizer.path))
          .doc("bpe: a HuggingFace tokenizer.json (byte-level BPE); relative to the working directory"),
      // ---- data ----
      K("data.kind", F(data.kind))
          .one_of({"text", "selective_copying", "classification"})
          .doc("text: language modelling on data.path; selective_copying: the synthetic task of the Mamba paper; "
               "classification: labelled sequences (model.head sequence_classification)"),
      K("data.path", F(data.path))
          .doc("text: the corpus file, or a token shard written by `mamba-train prepare` (detected by its magic; "
               "memory-mapped); classification (tsv / csv / jsonl): the training rows. Relative paths are relative "
               "to the working directory"),
      K("data.val_fraction", F(data.val_fraction))
          .ge(0)
          .lt(1)
          .doc("text: fraction of the file (its tail) held out for evaluation; classification without data.val_path: "
               "fraction of the rows held out (a permutation fixed by data.split_seed)"),
      K("data.seq_len", F(data.seq_len)).ge(2).le(kMaxCount).doc("tokens per training sequence"),
      K("data.copy_tokens", F(data.copy_tokens))
          .ge(1)
          .le(kMaxCount)
          .doc("selective_copying: data tokens to remember per sequence (seq_len must be > 2 * copy_tokens)"),
      K("data.copy_vocab", F(data.copy_vocab))
          .ge(1)
          .le(kMaxCount)
          .doc("selective_copying: data token values 1..copy_vocab (0 = noise, copy_vocab + 1 = marker)"),
      K("data.val_samples", F(data.val_samples))
          .ge(1)
          .le(kMaxCount)
          .doc("selective_copying: fixed validation sequences"),
      K("data.format", F(data.format))
          .one_of({"tsv", "csv", "jsonl", "fasta"})
          .doc("classification: rows of data.path as TSV / CSV (header line) / JSON lines, or FASTA files per class"),
      K("data.val_path", F(data.val_path))
          .doc("classification: validation file in data.format; \"\" = hold out data.val_fraction of the rows"),
      K("data.class_files", F(data.class_files))
          .doc("classification, fasta: comma-separated FASTA files, the k-th holds class k"),
      K("data.text_column", F(data.text_column)).check(not_empty).doc("classification: column / field with the text"),
      K("data.label_column", F(data.label_column))
          .check(not_empty)
          .doc("classification: column / field with the label: an integer 0 .. num_classes - 1 or a class name"),
      K("data.label_names", F(data.label_names))
          .check(label_names)
          .doc("classification: the class names in class order ([neg, pos]; --set data.label_names=neg,pos); labels "
               "must be one of them (fasta: names of the class files). [] = integer labels, or the sorted names the "
               "training file uses"),
      K("data.bad_rows", F(data.bad_rows))
          .one_of({"error", "skip"})
          .doc("classification: a bad row (wrong column count, empty text, bad label, non-DNA letter) stops the run "
               "naming file:line, or is skipped and counted"),
      K("data.test_fraction", F(data.test_fraction))
          .ge(0)
          .lt(1)
          .doc("classification without data.val_path: fraction of the rows held out as a test split (the tail of the "
               "data.split_seed permutation, validation before it), never trained on nor scored during training; "
               "score it with `mamba-train evaluate RUN_DIR --split test`. 0 = none (the splits are then as without "
               "it)"),
      K("data.split_seed", F(data.split_seed))
          .ge(-1)
          .note("-1 (run.seed)")
          .doc("classification without data.val_path: the seed of the held-out split; set it to keep one split while "
               "run.seed varies the model"),
      K("data.reset_at_document_end", F(data.reset_at_document_end))
          .doc("language models: where a window holds an end-of-document token (BPE <|endoftext|>, DNA [EOD] between "
               "FASTA records, a token shard's eod id), every layer's conv and SSM state restarts at the next token, "
               "so each document is read as if alone; data without such tokens is unaffected. Checkpoints written "
               "before this key resume with false, as they were trained"),
      K("data.rc_augment", F(data.rc_augment))
          .doc("classification with tokenizer dna: reverse-complement each training sample with probability 1/2"),
      // ---- optimizer ----
      K("optimizer.name", F(optimizer.name)).one_of({"adamw"}).doc("optimizer (AdamW, decoupled weight decay)"),
      K("optimizer.lr", F(optimizer.lr)).gt(0).doc("peak learning rate (after warmup)"),
      K("optimizer.beta1", F(optimizer.beta1)).ge(0).lt(1).doc("Adam first-moment decay"),
      K("optimizer.beta2", F(optimizer.beta2)).ge(0).lt(1).doc("Adam second-moment decay"),
      K("optimizer.eps", F(optimizer.eps)).gt(0).doc("Adam epsilon"),
      K("optimizer.weight_decay", F(optimizer.weight_decay))
          .ge(0)
          .doc("decoupled weight decay (not applied to biases, norms, A_log, D)"),
      K("optimizer.grad_clip", F(optimizer.grad_clip)).ge(0).doc("clip the global gradient L2 norm to this; 0 = off"),
      K("optimizer.head_lr", F(optimizer.head_lr))
          .ge(0)
          .doc("peak learning rate of the parameters outside the backbone (a classifier, an untied lm_head), "
               "following the same schedule scaled by head_lr / lr; 0 = optimizer.lr"),
      // ---- scheduler ----
      K("scheduler.kind", F(scheduler.kind))
          .one_of({"cosine", "constant", "linear"})
          .doc("learning-rate shape after the linear warmup: cosine or linear decay to min_lr, or constant"),
      K("scheduler.warmup_steps", F(scheduler.warmup_steps))
          .ge(0)
          .doc("linear warmup steps from 0 to optimizer.lr (< the run's steps)"),
      K("scheduler.warmup_ratio", F(scheduler.warmup_ratio))
          .ge(0)
          .lt(1)
          .doc("warmup as a fraction of the run's steps (rounded), instead of warmup_steps (setting both is an "
               "error)"),
      K("scheduler.min_lr", F(scheduler.min_lr)).ge(0).doc("final learning rate of cosine / linear (<= optimizer.lr)"),
      // ---- trainer ----
      K("trainer.max_steps", F(trainer.max_steps))
          .ge(0)
          .doc("optimizer steps to train; 0 only with trainer.epochs (setting both is an error)"),
      K("trainer.epochs", F(trainer.epochs))
          .ge(0)
          .doc("train for this many passes over the training data instead of max_steps (steps = ceil(epochs x "
               "training samples / global_batch_size); text: a sample is a window of seq_len tokens, an epoch "
               "floor(training tokens / seq_len) of them); 0 = use max_steps"),
      K("trainer.micro_batch_size", F(trainer.micro_batch_size))
          .ge(1)
          .le(kMaxCount)
          .doc("sequences per forward / backward pass"),
      K("trainer.global_batch_size", F(trainer.global_batch_size))
          .ge(1)
          .le(kMaxCount)
          .doc("sequences per optimizer step: a multiple of micro_batch_size (gradient accumulation)"),
      K("trainer.precision", F(trainer.precision))
          .one_of({"fp32", "bf16", "fp16"})
          .doc("compute precision; fp16 uses dynamic loss scaling (works on the CPU too, computed via f32)"),
      K("trainer.eval_every", F(trainer.eval_every)).ge(0).doc("evaluate every this many steps; 0 = only at the end"),
      K("trainer.eval_batches", F(trainer.eval_batches))
          .ge(0)
          .doc("validation batches per evaluation (at most, spread over the validation set); 0 = all of them"),
      K("trainer.log_every", F(trainer.log_every)).ge(1).doc("log metrics every this many steps"),
      K("trainer.max_nonfinite_steps", F(trainer.max_nonfinite_steps))
          .ge(1)
          .doc("stop after this many consecutive skipped (inf / NaN) steps"),
      K("trainer.loss_scale_init", F(trainer.loss_scale_init)).gt(0).doc("fp16: initial loss scale"),
      K("trainer.loss_scale_growth_interval", F(trainer.loss_scale_growth_interval))
          .ge(1)
          .doc("fp16: double the loss scale after this many finite steps in a row"),
      K("trainer.chunk_len", F(trainer.chunk_len))
          .ge(0)
          .le(kMaxCount)
          .doc("language models: train each sequence in chunks of this many tokens, carrying every layer's conv and "
               "SSM state and recomputing each chunk in the backward; the gradient is the whole sequence's, and "
               "activation memory is one chunk's. 0 = the whole sequence at once"),
      K("trainer.activation_checkpointing", F(trainer.activation_checkpointing))
          .one_of({"none", "block"})
          .doc("block: keep only each Mamba block's inputs for the backward and recompute its activations there "
               "(one extra forward of the blocks; the same gradients bit for bit); none: keep them"),
      K("trainer.objective", F(trainer.objective))
          .one_of({"clm", "mlm"})
          .doc("language models: clm = predict the next token (causal models); mlm = masked language modelling "
               "(BERT's masking: trainer.mlm_probability of the positions, 80% a mask token, 10% a random token, 10% "
               "unchanged; only those scored), for bidirectional models. mlm adds a mask token to the vocabulary"),
      K("trainer.mlm_probability", F(trainer.mlm_probability))
          .gt(0)
          .lt(1)
          .doc("mlm: fraction of the positions selected for prediction"),
      K("trainer.early_stop_patience", F(trainer.early_stop_patience))
          .ge(0)
          .doc("stop (with a checkpoint, exit 0) after this many evaluations in a row without a new best "
               "checkpoint.monitor value; 0 = off"),
      K("trainer.freeze_backbone_steps", F(trainer.freeze_backbone_steps))
          .ge(0)
          .doc("keep the backbone's weights fixed during the first N optimizer steps (learning rate 0: only the "
               "head learns; the backbone's Adam moments accumulate)"),
      // ---- checkpoint ----
      K("checkpoint.dir", F(checkpoint.dir)).note("<run.out_dir>/checkpoints").doc("directory of the checkpoints"),
      K("checkpoint.every", F(checkpoint.every))
          .ge(0)
          .doc("checkpoint every this many steps; 0 = only at the end (and on SIGINT / SIGTERM / SIGHUP, at a new best "
               "checkpoint.monitor value, at an early stop)"),
      K("checkpoint.keep_last", F(checkpoint.keep_last)).ge(1).doc("checkpoints kept; older ones are deleted"),
      K("checkpoint.resume", F(checkpoint.resume))
          .check(not_empty)
          .doc("auto: newest valid checkpoint in checkpoint.dir, else a fresh start (an error when checkpoints are "
               "there and none verifies); never: a fresh start (an error when checkpoint.dir holds checkpoints); or "
               "a checkpoint path"),
      K("checkpoint.monitor", F(checkpoint.monitor))
          .check(monitor_name)
          .doc("eval.<key> of the evaluation record (eval.loss, eval.accuracy, eval.mcc, ...): keep the best "
               "checkpoints by it and name the best in <checkpoint.dir>/best; \"\" = off"),
      K("checkpoint.monitor_mode", F(checkpoint.monitor_mode))
          .one_of({"auto", "min", "max"})
          .doc("whether a smaller or larger monitor value is better; auto = min for loss, perplexity and bits_per_*, "
               "max otherwise"),
      K("checkpoint.keep_best", F(checkpoint.keep_best))
          .ge(1)
          .doc("with checkpoint.monitor: the best checkpoints kept (never deleted by keep_last)"),
      // ---- logging ----
      K("logging.metrics_file", F(logging.metrics_file))
          .note("<run.out_dir>/metrics.jsonl")
          .doc("one JSON object per logged step / evaluation"),
      K("logging.progress", F(logging.progress)).doc("progress bar on a terminal (plain lines otherwise)"),
      K("logging.plot", F(logging.plot)).doc("write <run.out_dir>/loss.svg at the end"),
      // ---- distributed ----
      K("distributed.nproc_per_node", F(distributed.nproc_per_node))
          .ge(1)
          .doc("processes `mamba-train train` starts on this host, one per GPU (`--nproc N` overrides); ignored "
               "under an external launcher (RANK, WORLD_SIZE, .. set)"),
      K("distributed.backend", F(distributed.backend))
          .one_of({"auto", "nccl", "tcp"})
          .doc("gradient all-reduce: auto = nccl on CUDA (when built with NCCL), else tcp (CPU, or ranks sharing a "
               "GPU)"),
      K("distributed.timeout_s", F(distributed.timeout_s))
          .gt(0)
          .doc("a rank silent this long in a collective, barrier or the rendezvous ends the job with exit code 8"),
      K("distributed.bucket_mb", F(distributed.bucket_mb))
          .gt(0)
          .doc("MiB of fp32 gradients per all-reduce bucket (reduced while backward continues)"),
  };
}

#undef F

std::string md_escape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '|') {
      out += "\\|";
    } else if (c == '<' && i + 1 < s.size() && std::isalpha(static_cast<unsigned char>(s[i + 1]))) {
      out += "&lt;";  // "<name>" would read as an HTML tag
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

const std::vector<Key>& keys() {
  static const std::vector<Key> table = build();
  return table;
}

const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = {"run",       "model",   "tokenizer",  "data",    "optimizer",
                                                 "scheduler", "trainer", "checkpoint", "logging", "distributed"};
  return names;
}

const Key* find(const std::string& path) {
  for (const Key& k : keys()) {
    if (k.path == path) return &k;
  }
  return nullptr;
}

TrainConfig defaults() {
  TrainConfig c;
  c.model.mamba.vocab_size = 0;  // resolved from the tokenizer / data by the loader
  return c;
}

std::string type_name(const Key& k) {
  switch (k.type) {
    case Type::Int: return "int";
    case Type::Float: return "float";
    case Type::Bool: return "bool";
    case Type::String: return "string";
    case Type::List: return "list of strings";
    case Type::Enum: break;
  }
  std::string s = "one of: ";
  for (size_t i = 0; i < k.choices.size(); ++i) s += (i ? ", " : "") + (k.choices[i].empty() ? "\"\"" : k.choices[i]);
  return s;
}

std::string expectation(const Key& k) {
  switch (k.type) {
    case Type::Int: return "expected an integer";
    case Type::Float: return "expected a number";
    case Type::Bool: return "expected true or false";
    case Type::String: return "expected a string";
    case Type::List: return "expected a list of strings";
    case Type::Enum: break;
  }
  std::string s = "expected one of [";
  for (size_t i = 0; i < k.choices.size(); ++i) s += (i ? ", " : "") + (k.choices[i].empty() ? "\"\"" : k.choices[i]);
  return s + "]";
}

std::string format_double(double x) {
  // Shortest text that reads back to exactly x; plain decimals ("0.0001") unless they are much longer than the
  // exponent form ("1e-08", "1e+20").
  char buf[400];
  auto g = std::to_chars(buf, buf + sizeof(buf), x);
  const std::string general(buf, g.ptr);
  auto f = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::fixed);
  if (f.ec == std::errc() && static_cast<size_t>(f.ptr - buf) <= general.size() + 3) return std::string(buf, f.ptr);
  return general;
}

std::string range_problem(const Key& k, const Value& v) {
  if (k.type != Type::Int && k.type != Type::Float) return "";
  const double x = k.type == Type::Int ? static_cast<double>(v.i) : v.f;
  if (k.has_lo && (k.lo_open ? !(x > k.lo) : !(x >= k.lo)))
    return str("must be ", k.lo_open ? "> " : ">= ", format_double(k.lo));
  if (k.has_hi && (k.hi_open ? !(x < k.hi) : !(x <= k.hi)))
    return str("must be ", k.hi_open ? "< " : "<= ", format_double(k.hi));
  return "";
}

std::string range_text(const Key& k) {
  std::string s;
  if (k.has_lo) s += str(k.lo_open ? "> " : ">= ", format_double(k.lo));
  if (k.has_hi) s += str(s.empty() ? "" : " and ", k.hi_open ? "< " : "<= ", format_double(k.hi));
  return s;
}

namespace {

// Double-quoted YAML string: escapes for quote, backslash and control characters; other bytes as they are.
std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

std::string format_yaml(const Key& k, const Value& v) {
  switch (k.type) {
    case Type::Int: return std::to_string(v.i);
    case Type::Float: return format_double(v.f);
    case Type::Bool: return v.b ? "true" : "false";
    case Type::List: {
      std::string out = "[";
      for (size_t i = 0; i < v.list.size(); ++i) out += (i ? ", " : "") + yaml_quoted(v.list[i]);
      return out + "]";
    }
    case Type::Enum:
      // Plain when it is a simple word (all choices are): "cosine", "1.4b"; quoted otherwise ("").
      if (!v.s.empty() && v.s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") == std::string::npos) {
        return v.s;
      }
      break;
    case Type::String: break;
  }
  return yaml_quoted(v.s);
}

std::string reference_markdown() {
  const TrainConfig d = defaults();
  std::string out;
  for (const std::string& sec : sections()) {
    out += str("\n### `", sec, "`\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    for (const Key& k : keys()) {
      if (k.section() != sec) continue;
      const std::string def = !k.default_note.empty() ? k.default_note : format_yaml(k, k.get(d));
      const std::string range = range_text(k);
      out += str("| `", k.path, "` | ", md_escape(type_name(k)), " | `", def, "` | ", range.empty() ? "" : range, " | ",
                 md_escape(k.doc), " |\n");
    }
  }
  return out;
}

}  // namespace mt::train::schema

// mamba-train train | bench | export | checkpoint verify: the YAML-config trainer and what goes with it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>

#include "core/allocator.h"
#include "core/error.h"
#include "nn/hf_io.h"
#include "train/bench_kernels.h"
#include "train/bench_tokenizer.h"
#include "train/checkpoint.h"
#include "train/commands.h"
#include "train/config.h"
#include "train/launcher.h"
#include "train/rendezvous.h"
#include "train/trainer.h"
#if defined(MT_WITH_CUDA)
#include "core/cuda_context.h"
#endif

namespace mt::train {

namespace {

void synchronize(Device dev) {
#if defined(MT_WITH_CUDA)
  if (dev.is_cuda()) CudaContext::get().synchronize();
#else
  (void)dev;
#endif
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A checkpoint file, or the directory holding them: RUN_DIR/checkpoints when it exists, else the directory itself.
std::string checkpoint_dir_of(const std::string& p) {
  std::error_code ec;
  if (std::filesystem::is_directory(p + "/checkpoints", ec)) return p + "/checkpoints";
  return p;
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a Mamba model from a YAML config (resumes from its checkpoints)");
  struct Opts {
    std::string config;
    std::vector<std::string> set;
    int64_t stop_at = 0;
    int nproc = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("config", o->config, "YAML config (configs/README.md lists every key)")->required();
  cmd->add_option("--nproc", o->nproc,
                  "start this many ranks on this host, one per GPU (data parallelism; default "
                  "distributed.nproc_per_node)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--set", o->set, "override one key: --set optimizer.lr=3e-4 (repeatable)");
  cmd->add_option("--stop-at-step", o->stop_at,
                  "save a checkpoint after this step and stop (a planned preemption; resume with the same command)")
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  return [o]() {
    const DistEnv dist = dist_env_from_process();
    const TrainConfig cfg = load_train_config_file(o->config, o->set);
    const int nproc = o->nproc > 0 ? o->nproc : static_cast<int>(cfg.distributed.nproc_per_node);
    if (dist.distributed()) {
      MT_CHECK(o->nproc == 0, ErrorKind::Usage, "--nproc ", o->nproc, ": this process is already rank ", dist.rank,
               " of ", dist.world_size, " of an external launch (RANK, WORLD_SIZE set); leave --nproc out");
    } else if (nproc > 1) {
      return launch_local_ranks(nproc, child_rank_args(), std::min(10.0, cfg.distributed.timeout_s));
    }
    // Rank 0 reports; the others keep stderr (errors, warnings) and stay quiet on stdout.
    if (dist.rank > 0 && std::freopen("/dev/null", "w", stdout) == nullptr) std::perror("mamba-train: /dev/null");
    Trainer t(cfg, true, dist);
    RunOptions ro;
    ro.stop_at_step = o->stop_at;
    return t.run(ro).exit_code;
  };
}

Runner add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time training steps of a config: tokens/s, step time, peak GPU memory");
  struct Opts {
    std::string config;
    std::vector<std::string> set;
    int64_t steps = 10, warmup = 3;
    std::string tokenizer = "data/tokenizers/gpt-neox-20b/tokenizer.json", file = "data/corpora/tinyshakespeare.txt";
    int repeats = 5;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("config", o->config,
                  "YAML config, `kernels` for the selective-scan kernel benchmark, or `tokenizer` for BPE encoding "
                  "throughput")
      ->required();
  cmd->add_option("--set", o->set, "override one key (repeatable)");
  cmd->add_option("--steps", o->steps, "timed steps")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--warmup", o->warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--tokenizer", o->tokenizer, "bench tokenizer: the tokenizer.json")->capture_default_str();
  cmd->add_option("--file", o->file, "bench tokenizer: the text file to encode")->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "bench tokenizer: timed encodings (median)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  return [o]() {
    if (o->config == "kernels") return run_kernel_bench();
    if (o->config == "tokenizer") return run_tokenizer_bench(o->tokenizer, o->file, o->repeats);
    TrainConfig cfg = load_train_config_file(o->config, o->set);
    cfg.trainer.max_steps = std::max(cfg.trainer.max_steps, o->steps + o->warmup);
    Trainer t(cfg, /*write_outputs=*/false);
    const Device dev = t.device();
    const int64_t tokens_per_step = cfg.trainer.global_batch_size * cfg.data.seq_len;
    std::printf("bench: %s: %lld parameters, %s, %s, batch %lld x %lld tokens (micro-batch %lld)\n", o->config.c_str(),
                (long long)t.num_parameters(), dev.str().c_str(), cfg.trainer.precision.c_str(),
                (long long)cfg.trainer.global_batch_size, (long long)cfg.data.seq_len,
                (long long)cfg.trainer.micro_batch_size);
    for (int64_t i = 0; i < o->warmup; ++i) t.train_step();
    synchronize(dev);
    if (dev.is_cuda()) cuda_reset_peak_memory();
    std::vector<double> times;
    int64_t skipped = 0;
    double last_loss = 0;
    for (int64_t i = 0; i < o->steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const StepStats s = t.train_step();
      synchronize(dev);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      skipped += s.skipped;
      last_loss = s.loss;
    }
    const double med = median(times);
    std::printf("step time: median %.2f ms (min %.2f, max %.2f) over %lld steps after %lld warm-up\n", med * 1e3,
                *std::min_element(times.begin(), times.end()) * 1e3,
                *std::max_element(times.begin(), times.end()) * 1e3, (long long)o->steps, (long long)o->warmup);
    std::printf("throughput: %.1f k tokens/s\n", static_cast<double>(tokens_per_step) / med / 1e3);
    if (dev.is_cuda()) {
      const CudaMemoryStats ms = cuda_memory_stats();
      std::printf("peak GPU memory (tensors): %.2f GiB; cached by the allocator: %.2f GiB\n",
                  static_cast<double>(ms.peak_allocated_bytes) / (1 << 30),
                  static_cast<double>(ms.cached_bytes) / (1 << 30));
    }
    std::printf("last loss %.4f; skipped steps %lld\n", last_loss, (long long)skipped);
    MT_CHECK(std::isfinite(last_loss), ErrorKind::NonFinite, "bench: the loss is ", last_loss);
    return 0;
  };
}

Runner add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a training checkpoint as a HuggingFace directory");
  struct Opts {
    std::string checkpoint, hf;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("checkpoint", o->checkpoint,
                  "checkpoint file (ckpt-NNNNNNNN.h5), or a run / checkpoint directory "
                  "(its newest valid checkpoint)")
      ->required();
  cmd->add_option("--hf", o->hf, "output directory (config.json + model.safetensors)")->required();
  return [o]() {
    std::string path = o->checkpoint;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      const std::string dir = checkpoint_dir_of(path);
      path = latest_checkpoint(dir);
      MT_CHECK(!path.empty(), ErrorKind::Checkpoint, "no valid checkpoint in '", dir, "'");
    }
    CheckpointData d = load_checkpoint(path);
    auto cfg_it = d.strings.find("model_config_json");
    MT_CHECK(cfg_it != d.strings.end(), ErrorKind::Checkpoint, "checkpoint '", path,
             "': not a mamba-train training checkpoint (no model_config_json)");
    MT_CHECK(d.strings["model_head"] == "lm", ErrorKind::Checkpoint, "checkpoint '", path, "': model.head is ",
             d.strings["model_head"], "; only language models export to MambaForCausalLM");
    const MambaConfig mc = config_from_hf_json(cfg_it->second, path + ": model_config_json");
    nn::MambaLMHeadModel model(mc);
    std::map<std::string, Tensor> weights;
    const std::string prefix = "model/";
    for (auto& kv : d.tensors)
      if (kv.first.compare(0, prefix.size(), prefix) == 0) weights[kv.first.substr(prefix.size())] = kv.second;
    model.load_state_dict(weights, true, str("checkpoint '", path, "'"));
    nn::save_hf_model(model, o->hf);
    std::printf("exported %s (step %lld, %lld parameters) to %s\n", path.c_str(), (long long)d.ints["step"],
                (long long)model.num_parameters(), o->hf.c_str());
    return 0;
  };
}

Runner add_checkpoint_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("checkpoint", "Inspect training checkpoints");
  auto* verify = cmd->add_subcommand("verify", "Verify every checkpoint of a run; print the newest valid one");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  verify->add_option("path", *path, "run directory, checkpoint directory or checkpoint file")->required();
  return [path]() {
    std::error_code ec;
    MT_CHECK(std::filesystem::exists(*path, ec), ErrorKind::Checkpoint, "checkpoint verify: '", *path,
             "': no such file or directory");
    if (!std::filesystem::is_directory(*path, ec)) {
      const std::string why = verify_checkpoint(*path);
      MT_CHECK(why.empty(), ErrorKind::Checkpoint, "checkpoint '", *path, "': ", why);
      std::printf("ok %s\n", path->c_str());
      return 0;
    }
    const std::string dir = checkpoint_dir_of(*path);
    int64_t valid = 0, invalid = 0;
    std::vector<std::pair<int64_t, std::string>> found;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      const int64_t st = checkpoint_step_from_name(name);
      if (st >= 0) found.emplace_back(st, name);
    }
    MT_CHECK(!ec, ErrorKind::Io, "cannot list '", dir, "': ", ec.message());
    std::sort(found.begin(), found.end());
    for (const auto& f : found) {
      const std::string p = dir + "/" + f.second;
      const std::string why = verify_checkpoint(p);
      if (why.empty()) {
        ++valid;
        std::printf("ok      %s\n", p.c_str());
      } else {
        ++invalid;
        std::printf("INVALID %s: %s\n", p.c_str(), why.c_str());
      }
    }
    const std::string newest = latest_checkpoint(dir);
    MT_CHECK(!newest.empty(), ErrorKind::Checkpoint, "no valid checkpoint in '", dir, "' (", invalid, " invalid)");
    std::printf("latest valid: %s (%lld valid, %lld invalid)\n", newest.c_str(), (long long)valid, (long long)invalid);
    return 0;
  };
}

}  // namespace mt::train

// mamba-train demo: fit a small byte-level Mamba language model on tinyshakespeare (shipped in
// data/corpora/) with the tape autodiff and AdamW, printing the training loss as it falls and the held-out loss
// before and after. Runs on the GPU when one is visible, else on the CPU.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "autograd/autograd.h"
#include "nn/heads.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/commands.h"

namespace mt::train {

namespace {

struct TextData {
  std::vector<int64_t> train, val;  // bytes as ids; last 10% held out
};

TextData load_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MT_CHECK(f.good(), ErrorKind::Data, "cannot open corpus '", path,
           "' (run from the repository root, or pass --data PATH)");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  MT_CHECK(s.size() >= 1000, ErrorKind::Data, "corpus '", path, "' is too small (", s.size(), " bytes)");
  TextData d;
  const size_t split = s.size() * 9 / 10;
  for (size_t i = 0; i < s.size(); ++i) (i < split ? d.train : d.val).push_back(static_cast<unsigned char>(s[i]));
  return d;
}

// B windows of length L starting at random (seeded) offsets.
Tensor sample_batch(const std::vector<int64_t>& src, int64_t B, int64_t L, Generator& gen, Device dev) {
  Tensor starts = Tensor::randint({B}, gen, 0, static_cast<int64_t>(src.size()) - L);
  std::vector<int64_t> ids;
  for (int64_t s : starts.to_vector_i64()) ids.insert(ids.end(), src.begin() + s, src.begin() + s + L);
  return Tensor::from_vector_i64(ids, {B, L}).to(dev);
}

double eval_loss(const nn::MambaLMHeadModel& model, const std::vector<int64_t>& val, int64_t B, int64_t L, int batches,
                 DType cd, Device dev) {
  NoGradGuard ng;
  Generator gen(1234);  // the same held-out windows every time
  double total = 0;
  nn::ForwardOptions fo;
  fo.compute_dtype = cd;
  for (int i = 0; i < batches; ++i)
    total += model.forward(sample_batch(val, B, L, gen, dev), fo, true, Tensor(), /*with_logits=*/false).loss.item();
  return total / batches;
}

}  // namespace

Runner add_demo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "Fit a small byte-level Mamba LM on tinyshakespeare; print the loss");
  struct Opts {
    std::string data = "data/corpora/tinyshakespeare.txt", device = "auto", dtype = "auto";
    int64_t steps = 0, batch = 0, seq_len = 0, d_model = 0, layers = 0;
    double lr = 3e-3;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--data", o->data, "text corpus (bytes are tokens)")->capture_default_str();
  cmd->add_option("--device", o->device, "auto | cpu | cuda")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "compute dtype: auto (bf16 on GPU, f32 on CPU) | f32 | bf16")
      ->capture_default_str();
  cmd->add_option("--steps", o->steps, "optimizer steps (default 400 on CPU, 600 on GPU)")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o->batch, "sequences per step (default 8 CPU, 32 GPU)")->check(CLI::PositiveNumber);
  cmd->add_option("--seq-len", o->seq_len, "tokens per sequence (default 128 CPU, 512 GPU)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--d-model", o->d_model, "model width (default 64 CPU, 256 GPU)")->check(CLI::PositiveNumber);
  cmd->add_option("--layers", o->layers, "Mamba blocks (default 2 CPU, 4 GPU)")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o->lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->seed, "seed for initialisation and batches")->capture_default_str();
  return [o]() {
    const Device dev = resolve_device(o->device);
    const bool gpu = dev.is_cuda();
    const DType cd = o->dtype == "auto" ? (gpu ? DType::BF16 : DType::F32) : dtype_from_name(o->dtype);
    const int64_t steps = o->steps ? o->steps : (gpu ? 600 : 400);
    const int64_t B = o->batch ? o->batch : (gpu ? 32 : 8);
    const int64_t L = o->seq_len ? o->seq_len : (gpu ? 512 : 128);
    TextData data = load_bytes(o->data);
    MambaConfig cfg;
    cfg.vocab_size = 256;
    cfg.d_model = o->d_model ? o->d_model : (gpu ? 256 : 64);
    cfg.n_layer = o->layers ? o->layers : (gpu ? 4 : 2);
    cfg.d_inner = 0;
    cfg.dt_rank = 0;
    cfg.finalize();
    nn::MambaLMHeadModel model(cfg);
    Generator init_gen(o->seed);
    model.init_parameters(init_gen);
    model.to(dev);
    optim::AdamWOptions ao;
    ao.lr = o->lr;
    ao.weight_decay = 0.1;
    optim::AdamW opt(model.named_parameters(), ao);
    optim::ScheduleOptions so;
    so.peak_lr = o->lr;
    so.min_lr = o->lr / 10;
    so.warmup_steps = std::max<int64_t>(1, steps / 10);
    so.total_steps = steps;
    std::printf("demo: byte-level Mamba LM on %s (%zu train / %zu held-out bytes)\n", o->data.c_str(),
                data.train.size(), data.val.size());
    std::printf(
        "model: d_model %lld, %lld layers, d_state %lld, %lld parameters; device %s, %s; batch %lld x %lld, "
        "%lld steps\n",
        (long long)cfg.d_model, (long long)cfg.n_layer, (long long)cfg.d_state, (long long)model.num_parameters(),
        dev.str().c_str(), dtype_name(cd), (long long)B, (long long)L, (long long)steps);
    const double val_before = eval_loss(model, data.val, B, L, 4, cd, dev);
    std::printf("held-out loss before training: %.4f nats/byte (uniform would be %.4f)\n", val_before, std::log(256.0));
    Generator batch_gen(o->seed + 1);
    nn::ForwardOptions fo;
    fo.compute_dtype = cd;
    double window = 0;
    int in_window = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < steps; ++step) {
      Tensor ids = sample_batch(data.train, B, L, batch_gen, dev);
      nn::LMOutput r = model.forward(ids, fo, true, Tensor(), /*with_logits=*/false);
      backward(r.loss);
      const double norm = optim::global_grad_norm(model.parameters());
      const double clip = std::isfinite(norm) && norm > 1.0 ? 1.0 / norm : 1.0;
      const double lr = optim::lr_at(so, step);
      opt.step(lr, clip);
      model.zero_grad();
      window += r.loss.item();
      ++in_window;
      if ((step + 1) % 10 == 0 || step + 1 == steps) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("step %5lld  loss %.4f  lr %.2e  grad-norm %.3f  %.0f tokens/s\n", (long long)(step + 1),
                    window / in_window, lr, norm, static_cast<double>(B * L * (step + 1)) / secs);
        std::fflush(stdout);
        window = 0;
        in_window = 0;
      }
    }
    const double val_after = eval_loss(model, data.val, B, L, 4, cd, dev);
    std::printf("held-out loss after training: %.4f nats/byte (before: %.4f)\n", val_after, val_before);
    MT_CHECK(std::isfinite(val_after), ErrorKind::NonFinite, "training diverged: held-out loss is ", val_after);
    return 0;
  };
}

}  // namespace mt::train

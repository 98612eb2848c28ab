// mamba-train bench kernels: the selective scan alone, at the reference's shape (bf16, B=8 L=2048
// D=1536 N=16 with z, D, delta_bias and softplus) and at B=1 L=65536: forward and forward+backward times (CUDA events,
// median of 20 after 3 warm-up runs), the effective bandwidth of the forward (the fewest bytes it must move: u, delta,
// z, B, C read once, y written once) and that bandwidth as a fraction of a device-to-device copy measured in the same
// run; then both directions of a bidirectional layer as two calls and as one selective_scan_bidir call. Inputs are
// random (never zeros); the 50 MB inputs at the first shape about fill the L2, so repeated runs see
// a warm cache as they would in a training step that just wrote them. Then the LM head + loss at mamba-130m's shape,
// unfused against the chunked linear_cross_entropy (time and peak memory); and AdamW over mamba-130m's parameters
// with and without writing the bf16 weight copies, against casting them separately.
#include "train/cli/bench_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/selective_scan.h"
#include "kernels/selective_scan_bidir.h"
#include "nn/heads.h"
#include "optim/adamw.h"
#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_context.h"
#endif

namespace mt::train {

#if defined(MT_WITH_CUDA)
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median milliseconds of fn() over `reps` runs after `warmup`, each timed with events on the context's stream.
template <typename F>
double time_ms(F&& fn, int warmup = 3, int reps = 20) {
  cudaStream_t s = CudaContext::get().stream();
  cudaEvent_t e0, e1;
  MT_CUDA_CHECK(cudaEventCreate(&e0));
  MT_CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    MT_CUDA_CHECK(cudaEventRecord(e0, s));
    fn();
    MT_CUDA_CHECK(cudaEventRecord(e1, s));
    MT_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    MT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  MT_CUDA_CHECK(cudaEventDestroy(e0));
  MT_CUDA_CHECK(cudaEventDestroy(e1));
  return median(t);
}

struct ScanShape {
  int64_t B, L, D, N;
};

void bench_scan(const ScanShape& sh, double copy_gbps) {
  const Device dev = Device::cuda(CudaContext::get().device());
  const int64_t B = sh.B, L = sh.L, D = sh.D, N = sh.N;
  Generator gen(42);
  auto bf = [&](const Shape& s, double lo, double hi) { return Tensor::rand(s, gen, lo, hi, DType::BF16, dev); };
  Tensor u = bf({B, L, D}, -1, 1), delta = bf({B, L, D}, -3, 0), z = bf({B, L, D}, -1, 1);
  Tensor Bm = bf({B, L, N}, -1, 1), Cm = bf({B, L, N}, -1, 1);
  std::vector<double> a(static_cast<size_t>(D * N));
  for (int64_t i = 0; i < D * N; ++i) a[static_cast<size_t>(i)] = -static_cast<double>(i % N + 1);
  Tensor A = Tensor::from_vector(a, {D, N}, DType::F32).to(dev);
  Tensor Dsk = Tensor::rand({D}, gen, 0.5, 1.5, DType::F32, dev),
         bias = Tensor::rand({D}, gen, -4, -2, DType::F32, dev);
  Tensor y = Tensor::empty({B, L, D}, DType::BF16, dev), last = Tensor::empty({B, D, N}, DType::F32, dev);
  Tensor dy = bf({B, L, D}, -1, 1);
  Tensor du = Tensor::empty({B, L, D}, DType::BF16, dev), ddelta = Tensor::empty({B, L, D}, DType::BF16, dev),
         dz = Tensor::empty({B, L, D}, DType::BF16, dev);
  Tensor dA = Tensor::empty({D, N}, DType::F32, dev), dBm = Tensor::empty({B, L, N}, DType::BF16, dev),
         dCm = Tensor::empty({B, L, N}, DType::BF16, dev), dD = Tensor::empty({D}, DType::F32, dev),
         dbias = Tensor::empty({D}, DType::F32, dev);
  kernels::SelectiveScanParams p;
  p.B = B;
  p.L = L;
  p.D = D;
  p.N = N;
  p.dtype = DType::BF16;
  p.delta_softplus = true;
  p.u = u.data_ptr();
  p.delta = delta.data_ptr();
  p.A = A.data_ptr();
  p.Bm = Bm.data_ptr();
  p.Cm = Cm.data_ptr();
  p.D_skip = Dsk.data_ptr();
  p.z = z.data_ptr();
  p.delta_bias = bias.data_ptr();
  p.y = y.data_ptr();
  p.last_state = last.data_ptr();
  p.dy = dy.data_ptr();
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dz = dz.data_ptr();
  p.dA = dA.data_ptr();
  p.dBm = dBm.data_ptr();
  p.dCm = dCm.data_ptr();
  p.dD_skip = dD.data_ptr();
  p.ddelta_bias = dbias.data_ptr();
  // Inference: the forward alone. Training (what the autograd op does with a tape): the forward also saves the
  // state entering every tile, and the backward starts from those.
  auto fwd = [&]() { kernels::selective_scan_fwd_cuda(p); };
  const double tf = time_ms(fwd);
  Tensor tiles = Tensor::empty({kernels::selective_scan_tile_states_numel_cuda(p)}, DType::F32, dev);
  kernels::SelectiveScanParams pt = p;
  pt.tile_states = tiles.data_ptr();
  auto fwd_saving = [&]() { kernels::selective_scan_fwd_cuda(pt); };
  auto fwd_bwd = [&]() {
    kernels::selective_scan_fwd_cuda(pt);
    kernels::selective_scan_bwd_cuda(pt);
  };
  const double tfs = time_ms(fwd_saving), tfb = time_ms(fwd_bwd);
  const std::vector<double> yv = y.to(DType::F32).to(Device::cpu()).to_vector();
  bool finite = true;
  for (double v : yv) finite = finite && std::isfinite(v);
  MT_CHECK(finite, ErrorKind::NonFinite, "bench kernels: the scan produced a non-finite output");
  const double bytes = 2.0 * (4.0 * B * L * D + 2.0 * B * L * N);  // u, delta, z read + y written; B, C read
  const double gbps = bytes / (tf * 1e-3) / 1e9;
  std::printf(
      "scan bf16 B=%lld L=%lld D=%lld N=%lld (z, D, delta_bias, softplus): forward %.3f ms, forward+backward "
      "%.3f ms (forward saving tile states %.3f ms); forward moves %.0f MB: %.0f GB/s = %.0f%% of the copy "
      "rate\n",
      (long long)B, (long long)L, (long long)D, (long long)N, tf, tfb, tfs, bytes / 1e6, gbps,
      100.0 * gbps / copy_gbps);

  // Both directions of a bidirectional layer, forward saving tile states + backward: two one-direction calls (the
  // reverse one reading its inputs backwards in place) against one two-direction call. The reverse direction has
  // inputs and outputs of its own, as a Caduceus layer's has.
  Tensor u2 = bf({B, L, D}, -1, 1), delta2 = bf({B, L, D}, -3, 0), Bm2 = bf({B, L, N}, -1, 1),
         Cm2 = bf({B, L, N}, -1, 1);
  Tensor y2 = Tensor::empty({B, L, D}, DType::BF16, dev), dy2 = bf({B, L, D}, -1, 1);
  Tensor du2 = Tensor::empty({B, L, D}, DType::BF16, dev), ddelta2 = Tensor::empty({B, L, D}, DType::BF16, dev),
         dz2 = Tensor::empty({B, L, D}, DType::BF16, dev);
  Tensor dA2 = Tensor::empty({D, N}, DType::F32, dev), dBm2 = Tensor::empty({B, L, N}, DType::BF16, dev),
         dCm2 = Tensor::empty({B, L, N}, DType::BF16, dev), dD2 = Tensor::empty({D}, DType::F32, dev),
         dbias2 = Tensor::empty({D}, DType::F32, dev);
  kernels::SelectiveScanBidirParams bp{pt, pt};
  kernels::SelectiveScanParams& r = bp.rev;
  r.reverse = true;
  r.u = u2.data_ptr();
  r.delta = delta2.data_ptr();
  r.Bm = Bm2.data_ptr();
  r.Cm = Cm2.data_ptr();
  r.y = y2.data_ptr();
  r.last_state = nullptr;
  bp.fwd.last_state = nullptr;
  r.dy = dy2.data_ptr();
  r.du = du2.data_ptr();
  r.ddelta = ddelta2.data_ptr();
  r.dz = dz2.data_ptr();
  r.dA = dA2.data_ptr();
  r.dBm = dBm2.data_ptr();
  r.dCm = dCm2.data_ptr();
  r.dD_skip = dD2.data_ptr();
  r.ddelta_bias = dbias2.data_ptr();
  const int64_t nt = kernels::selective_scan_tile_states_numel_cuda(p);
  Tensor tiles2 = Tensor::empty({2 * nt}, DType::F32, dev);
  bp.fwd.tile_states = tiles2.data_ptr();
  r.tile_states = static_cast<float*>(tiles2.data_ptr()) + nt;
  auto two_calls = [&]() {
    kernels::selective_scan_fwd_cuda(bp.fwd);
    kernels::selective_scan_fwd_cuda(bp.rev);
    kernels::selective_scan_bwd_cuda(bp.fwd);
    kernels::selective_scan_bwd_cuda(bp.rev);
  };
  auto one_call = [&]() {
    kernels::selective_scan_bidir_fwd_cuda(bp);
    kernels::selective_scan_bidir_bwd_cuda(bp);
  };
  const double t2 = time_ms(two_calls), t1 = time_ms(one_call);
  std::printf(
      "scan both directions bf16 B=%lld L=%lld D=%lld N=%lld, forward (saving tile states) + backward: two calls "
      "%.3f ms, one selective_scan_bidir call %.3f ms (%.3fx)\n",
      (long long)B, (long long)L, (long long)D, (long long)N, t2, t1, t2 / t1);
}

// The LM head and its loss at mamba-130m's B=8 L=2048 (N = 8 * 2047 rows, H = 768, V = 50280, bf16), forward +
// backward through autograd: linear + cross_entropy (the [N, V] logits and their gradient) against the chunked
// linear_cross_entropy. Peak memory is the allocator's high-water mark above what was live before.
void bench_lm_loss() {
  const Device dev = Device::cuda(CudaContext::get().device());
  const int64_t N = 8 * 2047, H = 768, V = 50280;
  Generator gen(7);
  Tensor h = Tensor::rand({N, H}, gen, -1, 1, DType::BF16, dev);
  Tensor w = Tensor::rand({V, H}, gen, -0.05, 0.05, DType::BF16, dev);
  Tensor t = Tensor::randint({N}, gen, 0, V).to(dev);
  set_requires_grad(h);
  set_requires_grad(w);
  double loss[2] = {0, 0};
  for (int fused = 0; fused < 2; ++fused) {
    auto run = [&]() {
      Tensor l = fused ? linear_cross_entropy(h, w, t) : cross_entropy(linear(h, w), t);
      backward(l);  // no host read-back inside the timed loop
      set_grad(h, Tensor());
      set_grad(w, Tensor());
    };
    const double ms = time_ms(run, 2, 10);
    cuda_reset_peak_memory();
    const int64_t before = cuda_memory_stats().allocated_bytes;
    Tensor l = fused ? linear_cross_entropy(h, w, t) : cross_entropy(linear(h, w), t);
    backward(l);
    loss[fused] = l.item();
    const double peak = static_cast<double>(cuda_memory_stats().peak_allocated_bytes - before) / (1 << 20);
    set_grad(h, Tensor());
    set_grad(w, Tensor());
    std::printf(
        "LM head + loss, bf16 N=%lld H=%lld V=%lld, forward+backward: %s %.3f ms, peak %.0f MiB above the "
        "inputs, loss %.6f\n",
        (long long)N, (long long)H, (long long)V, fused ? "chunked linear_cross_entropy" : "linear + cross_entropy", ms,
        peak, loss[fused]);
  }
}

// AdamW over mamba-130m's parameters (f32 masters and gradients), one multi-tensor update per step: alone, and
// writing the bf16 weight copies the GEMMs read (the parameters a bf16 forward casts), against casting those copies
// separately (what every forward paid before the update wrote them).
void bench_adamw() {
  const Device dev = Device::cuda(CudaContext::get().device());
  MambaConfig c = MambaConfig::variant("130m");
  c.vocab_size = 50280;
  c.finalize();
  double ms[2] = {0, 0};
  double cast_ms = 0, copy_mib = 0;
  int64_t n_params = 0, n_copies = 0;
  for (int with_copy = 0; with_copy < 2; ++with_copy) {
    nn::MambaLMHeadModel m(c);
    Generator gen(9);
    m.init_parameters(gen);
    m.to(dev);
    auto named = m.named_parameters();
    std::vector<Tensor*> cast_set;
    {
      // The parameters a bf16 forward casts are those holding a copy after one (tiny) forward.
      NoGradGuard ng;
      nn::ForwardOptions fo;
      fo.compute_dtype = DType::BF16;
      m.forward(Tensor::randint({1, 8}, gen, 0, c.vocab_size).to(dev), fo, true, Tensor(), false);
      for (auto& np : named)
        if (np.second->impl().converted) cast_set.push_back(np.second);
      if (!with_copy)
        for (Tensor* p : cast_set) p->impl().converted.reset();
    }
    n_params = m.num_parameters();
    n_copies = static_cast<int64_t>(cast_set.size());
    for (auto& np : named) set_grad(*np.second, Tensor::randn(np.second->shape(), gen, 0.0, 1e-3, DType::F32, dev));
    optim::AdamW opt(named, optim::AdamWOptions{});
    ms[with_copy] = time_ms([&]() { opt.step(1e-4); });
    if (!with_copy) {
      for (Tensor* p : cast_set) copy_mib += static_cast<double>(p->numel()) * 2 / (1 << 20);
      cast_ms = time_ms([&]() {
        NoGradGuard ng;
        for (Tensor* p : cast_set) p->to(DType::BF16);
      });
    }
  }
  std::printf(
      "AdamW, mamba-130m (%lld parameters, f32 masters and gradients): update %.3f ms; update writing the "
      "bf16 copies of the %lld cast parameters (%.0f MiB) %.3f ms; casting those copies separately %.3f ms\n",
      (long long)n_params, ms[0], (long long)n_copies, copy_mib, ms[1], cast_ms);
}

}  // namespace

int run_kernel_bench() {
  MT_CHECK(cuda_available(), ErrorKind::Device, "bench kernels needs a CUDA device");
  std::printf("device: %s\n", CudaContext::get().describe().c_str());
  const Device dev = Device::cuda(CudaContext::get().device());
  const int64_t n = int64_t{1} << 30;  // 1 GiB
  Tensor src = Tensor::empty({n / 4}, DType::F32, dev);
  src.fill_(1.0);
  Tensor dst = Tensor::empty({n / 4}, DType::F32, dev);
  const double tc = time_ms([&]() {
    MT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(n), cudaMemcpyDeviceToDevice,
                                  CudaContext::get().stream()));
  });
  const double copy_gbps = 2.0 * static_cast<double>(n) / (tc * 1e-3) / 1e9;
  std::printf("device-to-device copy of 1 GiB: %.3f ms = %.0f GB/s (read + write)\n", tc, copy_gbps);
  src = Tensor();
  dst = Tensor();
  bench_scan({8, 2048, 1536, 16}, copy_gbps);
  bench_scan({1, 65536, 1536, 16}, copy_gbps);
  bench_lm_loss();
  bench_adamw();
  return 0;
}
#else
int run_kernel_bench() { throw Error(ErrorKind::Device, "bench kernels: this mamba-train was built without CUDA"); }
#endif

}  // namespace mt::train

// The forward-direction pass of the CUDA selective scan (scan_fwd_kernel) and the chunk combine: the forward runs
// passes Y and Local (selective_scan_fwd.cu), the backward LocalGrad and Checkpoint (selective_scan_bwd.cu).
#pragma once

#include "kernels/cuda/selective_scan_staging.cuh"

namespace mt::kernels {

namespace {

enum class Pass { Y, Local, LocalGrad, Checkpoint };

// ---------------------------------------------------------------------------------------------------------------
// Forward-direction pass over chunk blockIdx.y of batch row b of p's scan, channels blockIdx.x * 32 + lane
// (scan_fwd_kernel: the launch's row w = blockIdx.z picks the direction, ScanDirs). The buffers H0, out0, out1 and
// sumdt hold the rows of every direction of the launch and are indexed by w; p's own arrays by b.
//   Y:          y from the entering state (H0[chunk], or initial_state / 0 with one chunk; then writes last_state);
//               with out0 set, also the Checkpoint pass's tile states (the backward then skips that pass).
//   Local:      S = end state from zero (out0) and sum of d' (sumdt) per chunk.
//   LocalGrad:  also R = sum_t (prod_{s<=t} a_s) C_t dy0_t (out1).
//   Checkpoint: the state entering every tile into out0 (Hs: [(w * nT + tile) * N + n] * D + d).
// Dynamic shared memory (Y): sYv [G][TT / RW][32] vectors of RW steps, the per-warp partial sums of C h.
template <typename T, int NMAX, int NPT, Pass PASS>
__device__ __forceinline__ void scan_fwd_block(const SelectiveScanParams& p, int64_t b, int64_t w, int64_t CL,
                                               int64_t nch, const typename Compute<T>::type* H0,
                                               typename Compute<T>::type* out0, typename Compute<T>::type* out1,
                                               typename Compute<T>::type* sumdt) {
  using W = typename Compute<T>::type;
  constexpr bool kWithC = PASS == Pass::Y || PASS == Pass::LocalGrad;
  constexpr bool kWithGrad = PASS == Pass::LocalGrad;
  constexpr bool kYPass = PASS == Pass::Y;
  using St = Stage<T, NMAX, NPT, kWithC, kWithGrad, kYPass>;
  constexpr int G = St::G, TT = St::TT, RW = St::RW, TP = TT / RW;
  using YV = Vec<W, RW>;  // RW steps of the y partials (Y)
  __shared__ typename St::DU sDU[TT][32];
  __shared__ typename St::BC sBC[TT][G];
  __shared__ typename St::Grad sGr;
  __shared__ bool sM[kWithGrad ? TT : 1];
  __shared__ typename St::Raw raw;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  YV* sYv = reinterpret_cast<YV*>(smem_raw);

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane, k = blockIdx.y;
  const bool active = d < D;
  const W* A = static_cast<const W*>(p.A);
  const W* init = static_cast<const W*>(p.initial_state);

  W A2[NPT], h[NPT], Pc[NPT], Rc[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    const int n = grp * NPT + j;
    const bool on = active && n < N;
    A2[j] = on ? A[d * N + n] * W(kLog2e) : W(0);
    h[j] = W(0);
    Pc[j] = W(1);
    Rc[j] = W(0);
    if ((PASS == Pass::Y || PASS == Pass::Checkpoint) && on) {
      if (H0)
        h[j] = H0[cidx(w, k, n, d, nch, N, D)];
      else if (init)
        h[j] = init[(b * D + d) * N + n];
    }
  }
  const W bias = (active && p.delta_bias) ? static_cast<const W*>(p.delta_bias)[d] : W(0);
  const W Dd = (active && p.D_skip) ? static_cast<const W*>(p.D_skip)[d] : W(0);
  St::clear_padding(sBC);
  W sdt = W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  const int64_t nT = (L + TT - 1) / TT;
  St st;
  st.init(p, b, static_cast<int64_t>(blockIdx.x) * 32);
  // The tile states of this thread's states, [(w * nT + tile) * N + n] * D + d: advanced a tile at a time.
  W* hsp = out0 != nullptr ? out0 + (w * nT * N + grp * NPT) * D + d + t_begin / TT * N * D : nullptr;
  // y of step t0 + grp RW, channel d: advanced a tile at a time (rows st.erow apart, backwards when reversed).
  const int64_t yst = st.erow;
  T* yrow = kYPass ? static_cast<T*>(p.y) + st.ebase + (t_begin + grp * RW) * yst + lane : nullptr;
  st.load_tile(p, raw, b, t_begin, static_cast<int>(t_end - t_begin < TT ? t_end - t_begin : TT));
  // One tile. FULL: len == TT (every tile but a chunk's partial last one), known at compile time, so the full tiles
  // carry no row tests and no 64-bit length arithmetic.
  auto tile = [&](auto full, int64_t t0) {
    constexpr bool FULL = decltype(full)::value;
    const int len = FULL ? TT : static_cast<int>(t_end - t0);
    if ((PASS == Pass::Checkpoint || (PASS == Pass::Y && out0 != nullptr)) && active) {
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const int n = grp * NPT + j;
        if (n < N) hsp[j * D] = h[j];
      }
      hsp += N * D;
    }
    st.wait();
    __syncthreads();  // the tile's raw inputs have landed; the previous tile's readers are done
    W zr[kYPass ? RW : 1], ur[kYPass ? RW : 1];  // silu(z) and u of this thread's (t, channel) elements
    st.template commit<FULL>(p, raw, active, len, bias, sDU, sBC, &sGr, zr, ur, sM);
    __syncthreads();
    const int64_t t1 = t0 + TT;
    if (t1 + TT <= t_end)
      st.template load_tile<true>(p, raw, b, t1, TT);
    else if (t1 < t_end)
      st.load_tile(p, raw, b, t1, static_cast<int>(t_end - t1));
    // The per-warp partials of y: stored 4 steps at a time (as RW-step vectors). Stored step by step, they keep the
    // compiler from loading the next steps' inputs before each store (it cannot tell the arrays apart); all 16
    // held to the end of the tile, they take 16 registers during the recurrence.
    [[maybe_unused]] W yacc[kYPass ? TT : 1];
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      const typename St::DU du = sDU[t][lane];
      const typename St::BC bc = sBC[t][grp];
      [[maybe_unused]] W acc = W(0);
#pragma unroll
      for (int j = 0; j < NPT; ++j) {
        const W a = decay(du.v[0], A2[j]);
        h[j] = a * h[j] + du.v[1] * bc.v[j];
        if constexpr (kYPass) acc += bc.v[NPT + j] * h[j];
        if constexpr (kWithGrad) {
          Pc[j] *= a;
          Rc[j] += Pc[j] * bc.v[NPT + j] * sGr.y0[kWithGrad ? t : 0][lane];
        }
      }
      if constexpr (kYPass) {
        yacc[t] = acc;
        constexpr int YS = 4 < TT ? 4 : TT;  // stored YS (or RW if more) steps at a time
        if ((t + 1) % YS == 0) {
#pragma unroll
          for (int q = (t + 1 - YS) / RW; q < (t + 1) / RW; ++q) {
            YV v;
#pragma unroll
            for (int i = 0; i < RW; ++i) v.v[i] = yacc[q * RW + i];
            sYv[(grp * TP + q) * 32 + lane] = v;
          }
        }
      }
      if (PASS == Pass::Local || PASS == Pass::LocalGrad) sdt += du.v[0];
    }
    if constexpr (kYPass) {
      // Warp grp's partials of steps [q RW, q RW + RW) are at sYv[grp][q][lane]; thread (grp, lane) sums those of
      // its own RW steps in warp order, adds D u and applies silu(z).
      __syncthreads();
      if ((TP == G || grp < TP) && active) {
        W yv[RW];
#pragma unroll
        for (int i = 0; i < RW; ++i) yv[i] = Dd * ur[i];  // masked: silu(z) = 0 makes y = 0
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const YV v = sYv[g * TP * 32 + tid];  // [g][grp][lane]
#pragma unroll
          for (int i = 0; i < RW; ++i) yv[i] += v.v[i];
        }
#pragma unroll
        for (int i = 0; i < RW; ++i)
          if (FULL || grp * RW + i < len) yrow[i * yst] = from_compute<T>(yv[i] * zr[i]);
      }
    }
    if constexpr (kYPass) yrow += TT * yst;
  };
  int64_t t0 = t_begin;
  for (; t0 + TT <= t_end; t0 += TT) tile(std::true_type{}, t0);
  if (t0 < t_end) tile(std::false_type{}, t0);
  if (!active) return;
  if (PASS == Pass::Y && H0 == nullptr && p.last_state) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      if (n < N) static_cast<W*>(p.last_state)[(b * D + d) * N + n] = h[j];
    }
  }
  if (PASS == Pass::Local || PASS == Pass::LocalGrad) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      if (n < N) {
        out0[cidx(w, k, n, d, nch, N, D)] = h[j];
        if (kWithGrad) out1[cidx(w, k, n, d, nch, N, D)] = Rc[j];
      }
    }
    if (grp == 0) sumdt[(w * nch + k) * D + d] = sdt;
  }
}

// The launch of scan_fwd_block for NDIR directions: grid (channel blocks, chunks, NDIR * B).
template <typename T, int NMAX, int NPT, Pass PASS, int NDIR>
__global__ void __launch_bounds__(NMAX / NPT * 32, (Tuning::fwd_min_blocks<typename Compute<T>::type>(NMAX)))
    scan_fwd_kernel(ScanDirs<NDIR> dirs, int64_t CL, int64_t nch, const typename Compute<T>::type* H0,
                    typename Compute<T>::type* out0, typename Compute<T>::type* out1,
                    typename Compute<T>::type* sumdt) {
  for_direction(dirs, [&](const SelectiveScanParams& p, int64_t b) {
    scan_fwd_block<T, NMAX, NPT, PASS>(p, b, blockIdx.z, CL, nch, H0, out0, out1, sumdt);
  });
}

// Sequential combine over chunks, thread per (w, n, d) (launch row w = batch row b of its direction's p).
// grid (ceil(D / 128), N, NDIR * B), block 128. Sb, Rb and sumdt are indexed by w.
//   Sb (optional): S -> H0 (state entering each chunk), from initial_state; writes p.last_state when `last` is set
//   and p.last_state is not null.
//   Rb (optional): R -> Gend (gradient leaving each chunk), from dlast_state.
template <typename W>
__device__ __forceinline__ void scan_combine_thread(const SelectiveScanParams& p, int64_t b, int64_t w, int64_t nch,
                                                    W* Sb, W* Rb, const W* sumdt, bool last) {
  const int64_t D = p.D, N = p.N;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (d >= D) return;
  const W Adn = static_cast<const W*>(p.A)[d * N + n];
  const int64_t sn = (b * D + d) * N + n;
  if (Sb) {
    const W* init = static_cast<const W*>(p.initial_state);
    W H = init ? init[sn] : W(0);
#pragma unroll 4
    for (int64_t k = 0; k < nch; ++k) {
      const int64_t i = cidx(w, k, n, d, nch, N, D);
      const W s = Sb[i];
      const W P = exp_decay(Adn * sumdt[(w * nch + k) * D + d]);
      Sb[i] = H;
      H = P * H + s;
    }
    if (last && p.last_state) static_cast<W*>(p.last_state)[sn] = H;
  }
  if (Rb) {
    const W* dlast = static_cast<const W*>(p.dlast_state);
    W G = dlast ? dlast[sn] : W(0);
#pragma unroll 4
    for (int64_t k = nch - 1; k >= 0; --k) {
      const int64_t i = cidx(w, k, n, d, nch, N, D);
      const W r = Rb[i];
      const W P = exp_decay(Adn * sumdt[(w * nch + k) * D + d]);
      Rb[i] = G;
      G = P * G + r;
    }
  }
}

template <typename W, int NDIR>
__global__ void scan_combine_kernel(ScanDirs<NDIR> dirs, int64_t nch, W* Sb, W* Rb, const W* sumdt, bool last) {
  for_direction(dirs, [&](const SelectiveScanParams& p, int64_t b) {
    scan_combine_thread<W>(p, b, blockIdx.z, nch, Sb, Rb, sumdt, last);
  });
}

template <typename W, int NDIR>
void launch_combine(const ScanDirs<NDIR>& dirs, int64_t nch, W* Sb, W* Rb, const W* sumdt, bool last) {
  const SelectiveScanParams& p = dirs.p[0];
  const dim3 grid(static_cast<unsigned>((p.D + 127) / 128), static_cast<unsigned>(p.N),
                  static_cast<unsigned>(NDIR * p.B));
  scan_combine_kernel<W, NDIR><<<grid, 128, 0, cuda::stream()>>>(dirs, nch, Sb, Rb, sumdt, last);
  MT_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------------------------
// Host side of the forward, for the NDIR scans of dirs (one launch per pass for all of them): chunked as each scan
// alone would be, so every direction gets the bits of its own one-direction call. With tile states wanted, they are
// one buffer for the launch: dirs.p[i].tile_states = dirs.p[0].tile_states + i * (one direction's numel).
template <typename T, int NMAX, int NPT, int NDIR>
void scan_fwd(const ScanDirs<NDIR>& dirs) {
  using W = typename Compute<T>::type;
  const SelectiveScanParams& p = dirs.p[0];
  constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tuning::tile_steps<W>();
  const auto [CL, nch] = chunking(p, NT, TT);
  const int64_t rows = NDIR * p.B;
  const dim3 grid(static_cast<unsigned>((p.D + 31) / 32), static_cast<unsigned>(nch), static_cast<unsigned>(rows));
  const size_t smem_y = sizeof(W) * G * TT * 32;
  static bool smem_set = false;  // one per template instantiation
  allow_smem(scan_fwd_kernel<T, NMAX, NPT, Pass::Y, NDIR>, smem_y, smem_set);
  W* Hs = static_cast<W*>(p.tile_states);
  if (nch == 1) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::Y, NDIR>
        <<<grid, NT, smem_y, cuda::stream()>>>(dirs, CL, 1, nullptr, Hs, nullptr, nullptr);
    MT_CUDA_CHECK_LAUNCH();
    return;
  }
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  const int64_t nS = rows * nch * p.N * p.D;
  Tensor ws = Tensor::empty({nS + rows * nch * p.D}, wdt, Device::cuda(CudaContext::get().device()));
  W* Sb = static_cast<W*>(ws.data_ptr());  // stream-ordered reuse through the caching allocator
  W* sumdt = Sb + nS;
  scan_fwd_kernel<T, NMAX, NPT, Pass::Local, NDIR>
      <<<grid, NT, 0, cuda::stream()>>>(dirs, CL, nch, nullptr, Sb, nullptr, sumdt);
  MT_CUDA_CHECK_LAUNCH();
  launch_combine<W, NDIR>(dirs, nch, Sb, nullptr, sumdt, true);
  scan_fwd_kernel<T, NMAX, NPT, Pass::Y, NDIR>
      <<<grid, NT, smem_y, cuda::stream()>>>(dirs, CL, nch, Sb, Hs, nullptr, nullptr);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace

}  // namespace mt::kernels

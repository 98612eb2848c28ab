// CUDA selective scan, backward: the backward kernel, the fixed-order reductions of its partial sums, and the host
// side for NDIR scans in one launch per pass (the forward-direction passes it runs first are in
// selective_scan_fwd.cuh). Instantiated by selective_scan_bwd.cu (one scan) and selective_scan_bidir.cu (two).
//
// Per chunk: the state entering every tile (Hs, B*D*N*L/TT values) comes from the forward (which writes it when
// asked, p.tile_states) or from a checkpoint pass of its own; then the backward kernel walks the tiles last to first,
// recomputes the tile's states from its checkpoint into registers (TT x NPT per thread), computes y0 for dz, and
// runs the reverse recurrence for g = dLoss/dh, half a tile at a time (the per-warp partials of du and dd' then fit
// beside 3 blocks per SM). Nothing of size B*L*D*N is stored.
//
// Determinism: no atomics. dB_t, dC_t (sums over d) are reduced over the warp's 32 channels in shared memory, the
// per-block partials (one per 32 channels) are summed in a fixed order by reduce_bc_kernel, and dA (over b and
// chunks), dD and dbias by reduce_rows_kernel. The results are bitwise reproducible run to run.
#pragma once

#include "kernels/cuda/selective_scan_fwd.cuh"

namespace mt::kernels {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Backward over chunk blockIdx.y of batch row b of p's scan, channels blockIdx.x * 32 + lane, tiles last to first
// (scan_bwd_kernel: launch row w = blockIdx.z picks the direction; the buffers below hold every row of the launch
// and are indexed by w, p's own arrays by b).
// Gend: gradient leaving each chunk (null with one chunk: dlast_state or 0). Hs: the checkpoint pass's tile states.
// Partial outputs (summed in a fixed order by reduce_bc_kernel and reduce_rows_kernel):
//   pBC [nDb][2][R][N][L]  dB (0) and dC (1) summed over the block's 32 channels (t fastest: a warp's RS steps of
//                          one state are one contiguous store)
//   pA  [R * nch][D][N]     dA;   pDD, pBias [R * nch][D]   dD, dbias     (R = gridDim.z, the launch's rows)
// Per step and state the reverse recurrence needs h_{t-1} and h_t: the tile's states are recomputed from its
// checkpoint into registers (hs, TT x NPT per thread) and the sums over n that du and dd' need are factored:
// du = d' sum_n g B + D dy0 and dd' = sum_n g a h_{t-1} A + u sum_n g B.
// Dynamic shared memory: G * TT * 32 values of W seen as sY, the per-warp partials of y0 (for dz, [G][TT][32]), then
// as sQ, per half tile the per-warp partials {sum g B, sum g a h A} ([G][TT / 2][32] pairs); then sP [G][32][PS]:
// row c holds lane c's dB / dC values of RS steps (2 * NPT per step, one vector store), PS = RS * 2 * NPT + 16 bytes
// keeps the stores and the column sums free of bank conflicts.
template <typename T, int NMAX, int NPT>
__device__ __forceinline__ void scan_bwd_block(const SelectiveScanParams& p, int64_t b, int64_t w, int64_t CL,
                                               int64_t nch, const typename Compute<T>::type* Hs,
                                               const typename Compute<T>::type* Gend, typename Compute<T>::type* pBC,
                                               typename Compute<T>::type* pA, typename Compute<T>::type* pDD,
                                               typename Compute<T>::type* pBias) {
  using W = typename Compute<T>::type;
  using St = Stage<T, NMAX, NPT, true, true, false>;
  using DU = typename St::DU;
  using BC = typename St::BC;
  constexpr int G = St::G, TT = St::TT, NT = St::NT, RS = Tuning::bc_reduce_steps<W>(NPT), V = 2 * NPT;
  constexpr int TH = TT / 2, RH = (TH * 32 + NT - 1) / NT;
  constexpr int PS = RS * V + 16 / static_cast<int>(sizeof(W));
  static_assert(TH % RS == 0, "a dB / dC staging group must not straddle two half tiles");
  __shared__ DU sDU[TT][32];
  __shared__ BC sBC[TT][G];
  __shared__ typename St::Grad sGr;
  __shared__ bool sM[TT];
  __shared__ typename St::Raw raw;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  W* sY = reinterpret_cast<W*>(smem_raw);
  Vec<W, 2>* sQ = reinterpret_cast<Vec<W, 2>*>(smem_raw);
  W* sPw = sY + G * TT * 32 + (threadIdx.x >> 5) * (32 * PS);  // this warp's dB / dC staging

  const int N = static_cast<int>(p.N);
  const int64_t L = p.L, D = p.D;
  const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 5;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane, k = blockIdx.y, R = gridDim.z;
  const bool active = d < D;
  const W* A = static_cast<const W*>(p.A);
  const W* dlast = static_cast<const W*>(p.dlast_state);

  W A2[NPT], g[NPT], dA_acc[NPT], hn[NPT];  // A2 = A log2 e
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    const int n = grp * NPT + j;
    const bool on = active && n < N;
    A2[j] = on ? A[d * N + n] * W(kLog2e) : W(0);
    g[j] = W(0);
    if (on) {
      if (Gend)
        g[j] = Gend[cidx(w, k, n, d, nch, N, D)];
      else if (dlast)
        g[j] = dlast[(b * D + d) * N + n];
    }
    dA_acc[j] = W(0);
  }
  const W bias = (active && p.delta_bias) ? static_cast<const W*>(p.delta_bias)[d] : W(0);
  const W Dd = (active && p.D_skip) ? static_cast<const W*>(p.D_skip)[d] : W(0);
  St::clear_padding(sBC);
  W dD_acc = W(0), dbias_acc = W(0);

  const int64_t t_begin = k * CL, t_end = L < t_begin + CL ? L : t_begin + CL;
  const int64_t nT = (L + TT - 1) / TT;
  const int64_t t_last = t_begin + (t_end - 1 - t_begin) / TT * TT;  // tiles before it are full
  int64_t hoff = (w * nT * N + grp * NPT) * D + d;                   // tile states: + (tile * N + j) * D
  int64_t pbc_off = (static_cast<int64_t>(blockIdx.x) * 2 * R + w) * N * L;
  asm volatile("" : "+l"(hoff));
  auto load_state = [&](int64_t t0) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      hn[j] = (active && n < N) ? Hs[hoff + (t0 / TT * N + j) * D] : W(0);
    }
  };
  St st;
  st.init(p, b, static_cast<int64_t>(blockIdx.x) * 32);
  st.load_tile(p, raw, b, t_last, static_cast<int>(t_end - t_last));
  load_state(t_last);
  for (int64_t t0 = t_last; t0 >= t_begin; t0 -= TT) {
    const int len = static_cast<int>(t_end - t0 < TT ? t_end - t0 : TT);
    W hin[NPT];
#pragma unroll
    for (int j = 0; j < NPT; ++j) hin[j] = hn[j];
    st.wait();
    __syncthreads();  // the tile's raw inputs have landed; the previous tile's readers are done
    st.commit(p, raw, active, len, bias, sDU, sBC, &sGr, nullptr, nullptr, sM);  // not the y pass
    __syncthreads();
    const int64_t erow = st.erow;  // D, or -D reversed
    const int64_t orow = st.ebase + static_cast<int64_t>(static_cast<int>(t0) + grp) * erow + lane;  // (t0 + grp, d)
    if (t0 - TT >= t_begin) {
      st.load_tile(p, raw, b, t0 - TT, TT);
      load_state(t0 - TT);
    }

    // Recompute the tile's states from its checkpoint: hs[t] = h_{t0+t}; per-warp partials of y0 for dz.
    W hs[TT][NPT];
    {
      W h[NPT];
#pragma unroll
      for (int j = 0; j < NPT; ++j) h[j] = hin[j];
#pragma unroll
      for (int t = 0; t < TT; ++t) {
        const DU du = sDU[t][lane];
        const BC bc = sBC[t][grp];
        W acc = W(0);
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          h[j] = decay(du.v[0], A2[j]) * h[j] + du.v[1] * bc.v[j];
          hs[t][j] = h[j];
          acc += bc.v[NPT + j] * h[j];
        }
        if (p.z) sY[(grp * TT + t) * 32 + lane] = acc;
      }
    }
    if (p.z) {
      __syncthreads();
      T* dzrow = static_cast<T*>(p.dz) + orow;  // row t0 + grp, channel d
#pragma unroll
      for (int r = 0; r < St::RW; ++r) {
        const int t = grp + r * G;
        if ((St::RW * G == TT || t < TT) && t < len && active) {
          const int e = tid + r * NT;     // t * 32 + lane
          W y0 = Dd * (&sGr.u[0][0])[e];  // masked: u = 0 and the dz factor is 0
#pragma unroll
          for (int q = 0; q < G; ++q) y0 += sY[q * TT * 32 + e];
          dzrow[static_cast<int64_t>(r * G) * erow] = from_compute<T>(y0 * (&sGr.gz[0][0])[e]);
        }
      }
      __syncthreads();  // the y0 partials' space holds the du / dd' partials next
    }

    // Reverse recurrence over the tile, second half first; g = dLoss/dh_t.
#pragma unroll
    for (int half = 1; half >= 0; --half) {
#pragma unroll
      for (int tt = TH - 1; tt >= 0; --tt) {
        const int t = half * TH + tt;
        const DU du = sDU[t][lane];  // d', d' u
        const W y0 = sGr.y0[t][lane];
        const BC bc = sBC[t][grp];
        const int s = t % RS;
        W sgB = W(0), sgA = W(0);
        Vec<W, V> pv;
#pragma unroll
        for (int j = 0; j < NPT; ++j) {
          const W a = decay(du.v[0], A2[j]);
          const W hprev = t > 0 ? hs[t > 0 ? t - 1 : 0][j] : hin[j];
          pv.v[NPT + j] = y0 * hs[t][j];  // dC_t = dy0 h_t
          g[j] += bc.v[NPT + j] * y0;
          pv.v[j] = g[j] * du.v[1];  // dB_t = g d' u
          sgB += g[j] * bc.v[j];
          const W ga = g[j] * a;
          const W gah = ga * hprev;
          dA_acc[j] += gah * du.v[0];
          sgA += gah * A2[j];  // times ln 2 at the output: sum_n g a h A
          g[j] = ga;
        }
        *reinterpret_cast<Vec<W, V>*>(sPw + lane * PS + s * V) = pv;
        Vec<W, 2> q2;
        q2.v[0] = sgB;
        q2.v[1] = sgA;
        sQ[(grp * TH + tt) * 32 + lane] = q2;
        if (s == 0) {  // steps t .. t + RS - 1 are staged: lane sl * V + q sums value q of step t + sl
          __syncwarp();
          if (lane < RS * V) {
            W part[4] = {W(0), W(0), W(0), W(0)};  // 4 chains of 8 adds, not one of 32
#pragma unroll 2
            for (int c = 0; c < 32; c += 4) {
#pragma unroll
              for (int i = 0; i < 4; ++i) part[i] += sPw[(c + i) * PS + lane];
            }
            const W tot = (part[0] + part[1]) + (part[2] + part[3]);
            const int sl = lane / V, q = lane % V, n = grp * NPT + q % NPT;
            const int64_t ta = t0 + t + sl;
            if (t + sl < len && n < N) pBC[pbc_off + (q / NPT) * R * N * L + n * L + ta] = tot;
          }
          __syncwarp();
        }
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < RH; ++r) {
        const int tl = grp + r * G, t = half * TH + tl;
        if ((RH * G == TH || tl < TH) && t < len && active) {
          // Steps that are not real have d' = u = dy0 = 0 and a zero dd'/d delta factor; the select keeps them 0
          // whatever the partials hold.
          const int e = tid + r * NT;  // tl * 32 + lane
          const int f = half * TH * 32 + e;
          const W dt = (&sGr.dt[0][0])[f], y0 = (&sGr.y0[0][0])[f], u = (&sGr.u[0][0])[f];
          W sB = W(0), sA = W(0);
#pragma unroll
          for (int q = 0; q < G; ++q) {
            const Vec<W, 2> v = sQ[q * TH * 32 + e];
            sB += v.v[0];
            sA += v.v[1];
          }
          const bool real = sM[t];
          const W duv = real ? Dd * y0 + dt * sB : W(0);
          const W ddv = real ? (sA * W(kLn2) + u * sB) * (&sGr.gd[0][0])[f] : W(0);
          dD_acc += y0 * u;
          dbias_acc += ddv;
          const int64_t o = orow + static_cast<int64_t>(half * TH + r * G) * erow;  // row of step t, channel d
          static_cast<T*>(p.du)[o] = from_compute<T>(duv);
          static_cast<T*>(p.ddelta)[o] = from_compute<T>(ddv);
        }
      }
      if (half == 1) __syncthreads();  // the first half's partials overwrite these; the next tile starts with one
    }
  }

  if (active) {
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      const int n = grp * NPT + j;
      if (n < N) {
        pA[((w * nch + k) * D + d) * N + n] = dA_acc[j];
        if (k == 0 && p.dinitial_state) static_cast<W*>(p.dinitial_state)[(b * D + d) * N + n] = g[j];
      }
    }
  }
  // dD and dbias: the G threads of a channel (one per warp) summed in a fixed order.
  __syncthreads();
  sY[grp * 32 + lane] = dD_acc;
  sY[G * 32 + grp * 32 + lane] = dbias_acc;
  __syncthreads();
  if (grp == 0 && active) {
    W a = W(0), c = W(0);
#pragma unroll
    for (int q = 0; q < G; ++q) {
      a += sY[q * 32 + lane];
      c += sY[G * 32 + q * 32 + lane];
    }
    pDD[(w * nch + k) * D + d] = a;
    pBias[(w * nch + k) * D + d] = c;
  }
}

template <typename T, int NMAX, int NPT, int MINB, int NDIR>
__global__ void __launch_bounds__(NMAX / NPT * 32, MINB)
    scan_bwd_kernel(ScanDirs<NDIR> dirs, int64_t CL, int64_t nch, const typename Compute<T>::type* Hs,
                    const typename Compute<T>::type* Gend, typename Compute<T>::type* pBC,
                    typename Compute<T>::type* pA, typename Compute<T>::type* pDD, typename Compute<T>::type* pBias) {
  for_direction(dirs, [&](const SelectiveScanParams& p, int64_t b) {
    scan_bwd_block<T, NMAX, NPT>(p, b, blockIdx.z, CL, nch, Hs, Gend, pBC, pA, pDD, pBias);
  });
}

// Per direction i < ndir: out_i[j] = sum_r in[(i * R + r) * M + j] in order r = 0, 1, ... (a null out_i is skipped).
template <typename W>
__global__ void reduce_rows_kernel(const W* in, int64_t R, int64_t M, int ndir, W* out0, W* out1) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < ndir * M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t dir = i / M, j = i % M;
    W* out = dir == 0 ? out0 : out1;
    if (out == nullptr) continue;
    const W* src = in + dir * R * M + j;
    W s = W(0);
    for (int64_t r = 0; r < R; ++r) s += src[r * M];
    out[j] = s;
  }
}

// dB and dC from the backward's per-block partials pBC [nDb][2][RB][N][L] (RB = NDIR * B launch rows): thread
// i = ((c * RB + w) * N + n) * L + t sums its nDb rows in order (reads coalesced along t) and writes dB / dC
// [B][L][N] of w's direction in the storage dtype T at step t's position (L-1-t for a reverse scan).
template <typename W, typename T, int NDIR>
__global__ void reduce_bc_kernel(const W* in, int64_t nDb, ScanDirs<NDIR> dirs) {
  const int64_t B = dirs.p[0].B, L = dirs.p[0].L, N = dirs.p[0].N, RB = NDIR * B, M = 2 * RB * N * L;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    W s = W(0);
    for (int64_t r = 0; r < nDb; ++r) s += in[r * M + i];
    const int64_t t = i % L, n = i / L % N, cw = i / (L * N), w = cw % RB;
    const bool second = NDIR > 1 && w >= B;
    const bool rev = second ? dirs.p[NDIR - 1].reverse : dirs.p[0].reverse;
    void* out =
        cw < RB ? (second ? dirs.p[NDIR - 1].dBm : dirs.p[0].dBm) : (second ? dirs.p[NDIR - 1].dCm : dirs.p[0].dCm);
    const int64_t b = second ? w - B : w;
    static_cast<T*>(out)[(b * L + (rev ? L - 1 - t : t)) * N + n] = from_compute<T>(s);
  }
}

// Sums R rows of each direction's partials into out[i] (null: not wanted).
template <typename W, int NDIR>
void reduce_rows(const W* in, int64_t R, int64_t M, W* const (&out)[NDIR]) {
  if (out[0] == nullptr && out[NDIR - 1] == nullptr) return;
  reduce_rows_kernel<W>
      <<<cuda::grid_for(NDIR * M, 256), 256, 0, cuda::stream()>>>(in, R, M, NDIR, out[0], out[NDIR - 1]);
  MT_CUDA_CHECK_LAUNCH();
}

// Host side of the backward for the NDIR scans of dirs, chunked as each scan alone would be (scan_fwd). Tile states
// saved by the forward (p.tile_states) are one buffer for the launch, as scan_fwd writes them.
template <typename T, int NMAX, int NPT, int NDIR>
void scan_bwd(const ScanDirs<NDIR>& dirs) {
  using W = typename Compute<T>::type;
  const SelectiveScanParams& p = dirs.p[0];
  constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tuning::tile_steps<W>(), RS = Tuning::bc_reduce_steps<W>(NPT);
  constexpr int PS = RS * 2 * NPT + 16 / static_cast<int>(sizeof(W));
  const auto chunks = chunking(p, NT, TT);
  const int64_t CL = chunks.first, nch = chunks.second;
  const int64_t RB = NDIR * p.B, L = p.L, D = p.D, N = p.N, nDb = (D + 31) / 32, nT = (L + TT - 1) / TT;
  const dim3 grid(static_cast<unsigned>(nDb), static_cast<unsigned>(nch), static_cast<unsigned>(RB));
  const bool have_hs = p.tile_states != nullptr;  // written by the forward
  const int64_t nHs = have_hs ? 0 : RB * nT * N * D;
  const int64_t nBC = nDb * 2 * RB * L * N, nA = RB * nch * D * N, nDD = RB * nch * D;
  const int64_t nS = nch > 1 ? RB * nch * N * D : 0;
  const DType wdt = p.dtype == DType::F64 ? DType::F64 : DType::F32;
  Tensor ws = Tensor::empty({nHs + nBC + nA + 2 * nDD + 2 * nS + (nch > 1 ? nDD : 0)}, wdt,
                            Device::cuda(CudaContext::get().device()));
  W* Hs = have_hs ? static_cast<W*>(p.tile_states) : static_cast<W*>(ws.data_ptr());
  W* pBC = static_cast<W*>(ws.data_ptr()) + nHs;
  W* pA = pBC + nBC;
  W* pDD = pA + nA;
  W* pBias = pDD + nDD;
  W* Sb = nch > 1 ? pBias + nDD : nullptr;
  W* Rb = nch > 1 ? Sb + nS : nullptr;
  W* sumdt = nch > 1 ? Rb + nS : nullptr;
  if (nch > 1) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::LocalGrad, NDIR>
        <<<grid, NT, 0, cuda::stream()>>>(dirs, CL, nch, nullptr, Sb, Rb, sumdt);
    MT_CUDA_CHECK_LAUNCH();
    launch_combine<W, NDIR>(dirs, nch, Sb, Rb, sumdt, false);
  }
  if (!have_hs) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::Checkpoint, NDIR>
        <<<grid, NT, 0, cuda::stream()>>>(dirs, CL, nch, Sb, Hs, nullptr, nullptr);
    MT_CUDA_CHECK_LAUNCH();
  }
  const size_t smem = sizeof(W) * (static_cast<size_t>(G) * TT * 32 + static_cast<size_t>(G) * 32 * PS);
  static bool smem_set = false;  // one per template instantiation
  constexpr int kMinBlocks = Tuning::bwd_min_blocks<W>(NMAX);
  allow_smem(scan_bwd_kernel<T, NMAX, NPT, kMinBlocks, NDIR>, smem, smem_set);
  scan_bwd_kernel<T, NMAX, NPT, kMinBlocks, NDIR>
      <<<grid, NT, smem, cuda::stream()>>>(dirs, CL, nch, Hs, Rb, pBC, pA, pDD, pBias);
  MT_CUDA_CHECK_LAUNCH();
  reduce_bc_kernel<W, T, NDIR><<<cuda::grid_for(2 * RB * L * N, 256), 256, 0, cuda::stream()>>>(pBC, nDb, dirs);
  MT_CUDA_CHECK_LAUNCH();
  W* dA[NDIR];
  W* dD[NDIR];
  W* dbias[NDIR];
  for (int i = 0; i < NDIR; ++i) {
    dA[i] = static_cast<W*>(dirs.p[i].dA);
    dD[i] = static_cast<W*>(dirs.p[i].dD_skip);
    dbias[i] = static_cast<W*>(dirs.p[i].ddelta_bias);
  }
  reduce_rows<W, NDIR>(pA, p.B * nch, D * N, dA);
  reduce_rows<W, NDIR>(pDD, p.B * nch, D, dD);
  reduce_rows<W, NDIR>(pBias, p.B * nch, D, dbias);
}

}  // namespace

}  // namespace mt::kernels

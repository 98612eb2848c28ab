// CUDA selective scan, backward: the backward kernel, the fixed-order reductions of its partial sums, and the host
// side (the forward-direction passes it runs first are in selective_scan_fwd.cuh).
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
#include "kernels/cuda/selective_scan_fwd.cuh"

namespace mt::kernels {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Backward over chunk blockIdx.y of batch row blockIdx.z, channels blockIdx.x * 32 + lane, tiles last to first.
// Gend: gradient leaving each chunk (null with one chunk: dlast_state or 0). Hs: the checkpoint pass's tile states.
// Partial outputs (summed in a fixed order by reduce_bc_kernel and reduce_rows_kernel):
//   pBC [nDb][2][B][N][L]  dB (0) and dC (1) summed over the block's 32 channels (t fastest: a warp's RS steps of
//                          one state are one contiguous store)
//   pA  [B * nch][D][N]     dA;   pDD, pBias [B * nch][D]   dD, dbias
// Per step and state the reverse recurrence needs h_{t-1} and h_t: the tile's states are recomputed from its
// checkpoint into registers (hs, TT x NPT per thread) and the sums over n that du and dd' need are factored:
// du = d' sum_n g B + D dy0 and dd' = sum_n g a h_{t-1} A + u sum_n g B.
// Dynamic shared memory: G * TT * 32 values of W seen as sY, the per-warp partials of y0 (for dz, [G][TT][32]), then
// as sQ, per half tile the per-warp partials {sum g B, sum g a h A} ([G][TT / 2][32] pairs); then sP [G][32][PS]:
// row c holds lane c's dB / dC values of RS steps (2 * NPT per step, one vector store), PS = RS * 2 * NPT + 16 bytes
// keeps the stores and the column sums free of bank conflicts.
template <typename T, int NMAX, int NPT, int MINB>
__global__ void __launch_bounds__(NMAX / NPT * 32, MINB)
    scan_bwd_kernel(SelectiveScanParams p, int64_t CL, int64_t nch, const typename Compute<T>::type* Hs,
                    const typename Compute<T>::type* Gend, typename Compute<T>::type* pBC,
                    typename Compute<T>::type* pA, typename Compute<T>::type* pDD, typename Compute<T>::type* pBias) {
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
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane, k = blockIdx.y, b = blockIdx.z;
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
        g[j] = Gend[cidx(b, k, n, d, nch, N, D)];
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
  int64_t hoff = (b * nT * N + grp * NPT) * D + d;                   // tile states: + (tile * N + j) * D
  int64_t pbc_off = (static_cast<int64_t>(blockIdx.x) * 2 * p.B + b) * N * L;
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
  st.load_tile(p, raw, t_last, static_cast<int>(t_end - t_last));
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
      st.load_tile(p, raw, t0 - TT, TT);
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
            if (t + sl < len && n < N) pBC[pbc_off + (q / NPT) * p.B * N * L + n * L + ta] = tot;
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
        pA[((b * nch + k) * D + d) * N + n] = dA_acc[j];
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
    pDD[(b * nch + k) * D + d] = a;
    pBias[(b * nch + k) * D + d] = c;
  }
}

// out[i] = sum_r in[r * M + i] in order r = 0, 1, ...
template <typename W>
__global__ void reduce_rows_kernel(const W* in, int64_t R, int64_t M, W* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    W s = W(0);
    for (int64_t r = 0; r < R; ++r) s += in[r * M + i];
    out[i] = s;
  }
}

// dB and dC from the backward's per-block partials pBC [R][2][B][N][L]: thread i = ((c * B + b) * N + n) * L + t sums
// its R rows in order (reads coalesced along t) and writes dB / dC [B][L][N] in the storage dtype T at step t's
// position (L-1-t reversed).
template <typename W, typename T>
__global__ void reduce_bc_kernel(const W* in, int64_t R, int64_t B, int64_t L, int64_t N, bool reverse, T* dB, T* dC) {
  const int64_t M = 2 * B * N * L;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    W s = W(0);
    for (int64_t r = 0; r < R; ++r) s += in[r * M + i];
    const int64_t t = i % L, n = i / L % N, cb = i / (L * N), b = cb % B;
    (cb < B ? dB : dC)[(b * L + (reverse ? L - 1 - t : t)) * N + n] = from_compute<T>(s);
  }
}

template <typename W>
void reduce_rows(const W* in, int64_t R, int64_t M, W* out) {
  reduce_rows_kernel<W><<<cuda::grid_for(M, 256), 256, 0, cuda::stream()>>>(in, R, M, out);
  MT_CUDA_CHECK_LAUNCH();
}

template <typename T, int NMAX, int NPT>
void scan_bwd(const SelectiveScanParams& p) {
  using W = typename Compute<T>::type;
  constexpr int G = NMAX / NPT, NT = 32 * G, TT = Tuning::tile_steps<W>(), RS = Tuning::bc_reduce_steps<W>(NPT);
  constexpr int PS = RS * 2 * NPT + 16 / static_cast<int>(sizeof(W));
  const auto chunks = chunking(p, NT, TT);
  const int64_t CL = chunks.first, nch = chunks.second;
  const int64_t B = p.B, L = p.L, D = p.D, N = p.N, nDb = (D + 31) / 32, nT = (L + TT - 1) / TT;
  const dim3 grid(static_cast<unsigned>(nDb), static_cast<unsigned>(nch), static_cast<unsigned>(B));
  const bool have_hs = p.tile_states != nullptr;  // written by the forward
  const int64_t nHs = have_hs ? 0 : B * nT * N * D;
  const int64_t nBC = nDb * 2 * B * L * N, nA = B * nch * D * N, nDD = B * nch * D;
  const int64_t nS = nch > 1 ? B * nch * N * D : 0;
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
    scan_fwd_kernel<T, NMAX, NPT, Pass::LocalGrad><<<grid, NT, 0, cuda::stream()>>>(p, CL, nch, nullptr, Sb, Rb, sumdt);
    MT_CUDA_CHECK_LAUNCH();
    launch_combine<W>(p, nch, Sb, Rb, sumdt, nullptr);
  }
  if (!have_hs) {
    scan_fwd_kernel<T, NMAX, NPT, Pass::Checkpoint>
        <<<grid, NT, 0, cuda::stream()>>>(p, CL, nch, Sb, Hs, nullptr, nullptr);
    MT_CUDA_CHECK_LAUNCH();
  }
  const size_t smem = sizeof(W) * (static_cast<size_t>(G) * TT * 32 + static_cast<size_t>(G) * 32 * PS);
  static bool smem_set = false;  // one per template instantiation
  constexpr int kMinBlocks = Tuning::bwd_min_blocks<W>(NMAX);
  allow_smem(scan_bwd_kernel<T, NMAX, NPT, kMinBlocks>, smem, smem_set);
  scan_bwd_kernel<T, NMAX, NPT, kMinBlocks>
      <<<grid, NT, smem, cuda::stream()>>>(p, CL, nch, Hs, Rb, pBC, pA, pDD, pBias);
  MT_CUDA_CHECK_LAUNCH();
  reduce_bc_kernel<W, T><<<cuda::grid_for(2 * B * L * N, 256), 256, 0, cuda::stream()>>>(
      pBC, nDb, B, L, N, p.reverse, static_cast<T*>(p.dBm), static_cast<T*>(p.dCm));
  MT_CUDA_CHECK_LAUNCH();
  reduce_rows<W>(pA, B * nch, D * N, static_cast<W*>(p.dA));
  if (p.dD_skip) reduce_rows<W>(pDD, B * nch, D, static_cast<W*>(p.dD_skip));
  if (p.ddelta_bias) reduce_rows<W>(pBias, B * nch, D, static_cast<W*>(p.ddelta_bias));
}

}  // namespace

void selective_scan_bwd_cuda(const SelectiveScanParams& p) {
  check_params(p, "selective_scan_bwd_cuda");
  cuda::dispatch_float(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_nmax(p.N, [&](auto nmax) {
      constexpr int NMAX = decltype(nmax)::value;
      scan_bwd<T, NMAX, Tuning::states_per_thread(NMAX)>(p);
    });
  });
}

}  // namespace mt::kernels

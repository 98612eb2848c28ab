// CPU reference of the selective scan (math in kernels/selective_scan.h). Templated on the compute type T
// (float or double); every input and output is contiguous and of type T except the mask (any dtype).
//
// Forward: OpenMP over (b, d) channels, each walking t with its N states.
// Backward: OpenMP over tasks (b, channel group); a task recomputes each channel's states forward into a
// (L+1)*N buffer, then runs the reverse recurrence. dB and dC (sums over d) are accumulated per task into a
// private [L, N] slice and dA, dD, dbias (sums over b) per (b, d); the slices are then summed in a fixed order,
// so results do not depend on the number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/detail/time_map.h"
#include "kernels/selective_scan.h"

namespace mt::kernels {

namespace {

// Below this many state updates a parallel region costs more than it saves (gradcheck runs thousands of tiny
// scans; on a busy 2-core CI machine, spinning OpenMP barriers dominate).
constexpr int64_t kParallelMinWork = 1 << 15;

template <typename T>
T softplus_ref(T x) {
  return x <= T(20) ? std::log1p(std::exp(x)) : x;  // PyTorch / mamba threshold 20
}

template <typename T>
T sigmoid_ref(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// mask[b*L + t] != 0, or true when there is no mask.
struct MaskReader {
  const void* p;
  DType dt;
  bool real(int64_t i) const { return p == nullptr || load_as_double(p, dt, i) != 0.0; }
};

template <typename T>
struct Inputs {
  const T *u, *delta, *A, *Bm, *Cm, *Dsk, *z, *bias, *init;
  explicit Inputs(const SelectiveScanParams& p)
      : u(static_cast<const T*>(p.u)),
        delta(static_cast<const T*>(p.delta)),
        A(static_cast<const T*>(p.A)),
        Bm(static_cast<const T*>(p.Bm)),
        Cm(static_cast<const T*>(p.Cm)),
        Dsk(static_cast<const T*>(p.D_skip)),
        z(static_cast<const T*>(p.z)),
        bias(static_cast<const T*>(p.delta_bias)),
        init(static_cast<const T*>(p.initial_state)) {}
};

template <typename T>
void fwd(const SelectiveScanParams& p) {
  const int64_t B = p.B, L = p.L, D = p.D, N = p.N;
  const Inputs<T> in(p);
  const MaskReader mask{p.mask, p.mask_dtype};
  const TimeMap walk{L, p.reverse, p.reset};  // step s reads position walk.pos(s); the state is zeroed where a
                                              // document starts
  T* y = static_cast<T*>(p.y);
  T* last = static_cast<T*>(p.last_state);

#pragma omp parallel if (B * D * L * N >= kParallelMinWork)
  {
    std::vector<T> h(N);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t d = 0; d < D; ++d) {
        const int64_t bd = b * D + d;
        for (int64_t n = 0; n < N; ++n) h[n] = in.init ? in.init[bd * N + n] : T(0);
        const T Dd = in.Dsk ? in.Dsk[d] : T(0);
        const T bias = in.bias ? in.bias[d] : T(0);
        const T* Ad = in.A + d * N;
        for (int64_t s = 0; s < L; ++s) {
          const int64_t t = walk.pos(s);
          const int64_t idx = (b * L + t) * D + d;
          if (walk.starts(b, s)) std::fill(h.begin(), h.end(), T(0));
          if (!mask.real(b * L + t)) {
            y[idx] = T(0);
            continue;
          }
          T dt = in.delta[idx] + bias;
          if (p.delta_softplus) dt = softplus_ref(dt);
          const T uu = in.u[idx];
          const T* Bt = in.Bm + (b * L + t) * N;
          const T* Ct = in.Cm + (b * L + t) * N;
          T acc = T(0);
          for (int64_t n = 0; n < N; ++n) {
            h[n] = std::exp(dt * Ad[n]) * h[n] + dt * Bt[n] * uu;
            acc += Ct[n] * h[n];
          }
          T yv = acc + Dd * uu;
          if (in.z) {
            const T zz = in.z[idx];
            yv *= zz * sigmoid_ref(zz);
          }
          y[idx] = yv;
        }
        if (last)  // null: not wanted (the two-direction op asks for none)
          for (int64_t n = 0; n < N; ++n) last[bd * N + n] = h[n];
      }
    }
  }
}

template <typename T>
void bwd(const SelectiveScanParams& p) {
  const int64_t B = p.B, L = p.L, D = p.D, N = p.N;
  const Inputs<T> in(p);
  const MaskReader mask{p.mask, p.mask_dtype};
  const TimeMap walk{L, p.reverse, p.reset};
  const T* dy = static_cast<const T*>(p.dy);
  const T* dlast = static_cast<const T*>(p.dlast_state);
  T* du = static_cast<T*>(p.du);
  T* ddelta = static_cast<T*>(p.ddelta);
  T* dz = static_cast<T*>(p.dz);
  MT_ASSERT(du && ddelta && p.dA && p.dBm && p.dCm && (!in.z || dz), "selective_scan_bwd_cpu: missing outputs");

  // Channel groups: a fixed count (not the thread count) so that the summation order is fixed.
  const int64_t G = std::min<int64_t>(D, 8);
  const int64_t LN = L * N;
  std::vector<T> dB_part(static_cast<size_t>(G * B * LN), T(0)), dC_part(dB_part.size(), T(0));
  std::vector<T> dA_part(static_cast<size_t>(B * D * N)), dD_part(static_cast<size_t>(B * D)),
      dbias_part(static_cast<size_t>(B * D));

#pragma omp parallel if (B * D * L * N >= kParallelMinWork)
  {
    std::vector<T> hs(static_cast<size_t>((L + 1) * N));  // hs[(s+1)*N + n] = the state after step s; hs[n] = h_{-1}
    std::vector<T> g(N), dA_acc(N), zero(N, T(0));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t gi = 0; gi < G; ++gi) {
        T* dBp = dB_part.data() + (gi * B + b) * LN;
        T* dCp = dC_part.data() + (gi * B + b) * LN;
        for (int64_t d = gi * D / G; d < (gi + 1) * D / G; ++d) {
          const int64_t bd = b * D + d;
          const T Dd = in.Dsk ? in.Dsk[d] : T(0);
          const T bias = in.bias ? in.bias[d] : T(0);
          const T* Ad = in.A + d * N;

          // Recompute the states (same expressions as the forward).
          for (int64_t n = 0; n < N; ++n) hs[n] = in.init ? in.init[bd * N + n] : T(0);
          for (int64_t s = 0; s < L; ++s) {
            const int64_t t = walk.pos(s);
            const T* hp = walk.starts(b, s) ? zero.data() : hs.data() + s * N;
            T* hc = hs.data() + (s + 1) * N;
            const int64_t idx = (b * L + t) * D + d;
            if (!mask.real(b * L + t)) {
              for (int64_t n = 0; n < N; ++n) hc[n] = hp[n];
              continue;
            }
            T dt = in.delta[idx] + bias;
            if (p.delta_softplus) dt = softplus_ref(dt);
            const T uu = in.u[idx];
            const T* Bt = in.Bm + (b * L + t) * N;
            for (int64_t n = 0; n < N; ++n) hc[n] = std::exp(dt * Ad[n]) * hp[n] + dt * Bt[n] * uu;
          }

          // Reverse recurrence; g = dLoss/dh_t.
          for (int64_t n = 0; n < N; ++n) {
            g[n] = dlast ? dlast[bd * N + n] : T(0);
            dA_acc[n] = T(0);
          }
          T dD_acc = T(0), dbias_acc = T(0);
          for (int64_t s = L - 1; s >= 0; --s) {
            const int64_t t = walk.pos(s);
            const int64_t idx = (b * L + t) * D + d;
            const bool rs = walk.starts(b, s);
            if (!mask.real(b * L + t)) {
              du[idx] = T(0);
              ddelta[idx] = T(0);
              if (dz) dz[idx] = T(0);
              if (rs) std::fill(g.begin(), g.end(), T(0));
              continue;
            }
            const T dt_raw = in.delta[idx] + bias;
            const T dt = p.delta_softplus ? softplus_ref(dt_raw) : dt_raw;
            const T uu = in.u[idx];
            const T* Bt = in.Bm + (b * L + t) * N;
            const T* Ct = in.Cm + (b * L + t) * N;
            const T* hp = rs ? zero.data() : hs.data() + s * N;
            const T* hc = hs.data() + (s + 1) * N;
            const T gy = dy[idx];
            T dy0 = gy;
            if (in.z) {
              T y0 = Dd * uu;
              for (int64_t n = 0; n < N; ++n) y0 += Ct[n] * hc[n];
              const T zz = in.z[idx];
              const T s = sigmoid_ref(zz);
              dz[idx] = gy * y0 * s * (T(1) + zz * (T(1) - s));
              dy0 = gy * zz * s;
            }
            dD_acc += dy0 * uu;
            T du_v = dy0 * Dd;
            T ddt = T(0);
            for (int64_t n = 0; n < N; ++n) {
              const T a = rs ? T(0) : std::exp(dt * Ad[n]);
              dCp[t * N + n] += dy0 * hc[n];
              g[n] += Ct[n] * dy0;
              dBp[t * N + n] += g[n] * dt * uu;
              du_v += g[n] * dt * Bt[n];
              const T gah = g[n] * a * hp[n];
              dA_acc[n] += gah * dt;
              ddt += gah * Ad[n] + g[n] * Bt[n] * uu;
              g[n] *= a;
            }
            if (p.delta_softplus && dt_raw <= T(20)) ddt *= sigmoid_ref(dt_raw);
            ddelta[idx] = ddt;
            du[idx] = du_v;
            dbias_acc += ddt;
          }
          for (int64_t n = 0; n < N; ++n) dA_part[bd * N + n] = dA_acc[n];
          dD_part[bd] = dD_acc;
          dbias_part[bd] = dbias_acc;
          if (p.dinitial_state)
            for (int64_t n = 0; n < N; ++n) static_cast<T*>(p.dinitial_state)[bd * N + n] = g[n];
        }
      }
    }
  }

  // Fixed-order reductions of the partial sums.
  T* dBm = static_cast<T*>(p.dBm);
  T* dCm = static_cast<T*>(p.dCm);
#pragma omp parallel for schedule(static) if (B * LN * G >= kParallelMinWork)
  for (int64_t i = 0; i < B * LN; ++i) {
    const int64_t b = i / LN, r = i % LN;
    T sb = T(0), sc = T(0);
    for (int64_t gi = 0; gi < G; ++gi) {
      sb += dB_part[(gi * B + b) * LN + r];
      sc += dC_part[(gi * B + b) * LN + r];
    }
    dBm[i] = sb;
    dCm[i] = sc;
  }
  T* dA = static_cast<T*>(p.dA);
  for (int64_t i = 0; i < D * N; ++i) {
    T s = T(0);
    for (int64_t b = 0; b < B; ++b) s += dA_part[b * D * N + i];
    dA[i] = s;
  }
  T* dD = static_cast<T*>(p.dD_skip);
  T* dbias = static_cast<T*>(p.ddelta_bias);
  for (int64_t d = 0; d < D; ++d) {
    T sd = T(0), sb = T(0);
    for (int64_t b = 0; b < B; ++b) {
      sd += dD_part[b * D + d];
      sb += dbias_part[b * D + d];
    }
    if (dD) dD[d] = sd;
    if (dbias) dbias[d] = sb;
  }
}

void check_dtype(const SelectiveScanParams& p, const char* what) {
  MT_CHECK_SHAPE(p.dtype == DType::F32 || p.dtype == DType::F64, what, ": the CPU kernel computes in f32 or f64, got ",
                 dtype_name(p.dtype));
  MT_CHECK_SHAPE(p.bc_stride == 0 || p.bc_stride == p.N, what, ": Bm and Cm must be packed (row stride N = ", p.N,
                 "), got a row stride of ", p.bc_stride);
}

}  // namespace

void selective_scan_fwd_cpu(const SelectiveScanParams& p) {
  check_dtype(p, "selective_scan_fwd_cpu");
  if (p.dtype == DType::F64)
    fwd<double>(p);
  else
    fwd<float>(p);
}

void selective_scan_bwd_cpu(const SelectiveScanParams& p) {
  check_dtype(p, "selective_scan_bwd_cpu");
  if (p.dtype == DType::F64)
    bwd<double>(p);
  else
    bwd<float>(p);
}

}  // namespace mt::kernels

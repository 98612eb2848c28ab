// Selective scan (the Mamba-1 SSM recurrence), forward and backward, token-major layout.
//
// Shapes (all contiguous): u, delta, z, y: [B, L, D]; Bm, Cm: [B, L, N]; A: [D, N]; D_skip, delta_bias: [D];
// initial_state, last_state: [B, D, N]; mask: [B, L] (any dtype, nonzero = real token).
// Token-major (time before channel) so that the GEMMs producing u, delta, B, C and consuming y need no transposes;
// the reference kernel of state-spaces uses [B, D, L] (docs/DESIGN.md "Selective scan contract and tolerances").
//
// Forward, per batch b, channel d, state n (h_{-1} = initial_state, or 0 when absent):
//   dt_t   = delta[b,t,d] + delta_bias[d]                      (bias optional)
//   d'_t   = softplus(dt_t) if delta_softplus else dt_t         (softplus(x) = x for x > 20, as PyTorch / mamba)
//   real t (mask[b,t] != 0 or no mask):
//     a_t[n] = exp(d'_t * A[d,n])
//     h_t[n] = a_t[n] * h_{t-1}[n] + d'_t * Bm[b,t,n] * u[b,t,d]
//     y0_t   = sum_n Cm[b,t,n] * h_t[n] + D_skip[d] * u[b,t,d]  (D_skip optional)
//     y_t    = y0_t * silu(z[b,t,d]) if z given, else y0_t
//   masked t (mask == 0): h_t = h_{t-1} (state unchanged), y_t = 0.
//   last_state = h_{L-1}.
// Document resets (reset [B, L] i32, optional): where reset[b, t] != 0 a new document starts at t, and the state
// entering step t is zero instead of h_{t-1} (real or masked t alike; at t = 0 the initial state is dropped). Then a
// window holding two documents gives, position by position, what the two give run separately. Equivalently a_t = 0.
//
// Backward, given gy = dLoss/dy and gS = dLoss/dlast_state (optional, zero when absent). Walk t = L-1 .. 0 with
// g[n] = dLoss/dh_t, starting from g = gS:
//   masked t: every gradient at t is 0 and g passes through unchanged (h_t = h_{t-1}).
//   real t:
//     dy0     = gy_t * silu(z_t)                 dz_t = gy_t * y0_t * s (1 + z_t (1 - s)),  s = sigmoid(z_t)
//     dC_t[n] = dy0 * h_t[n]                     dD  += dy0 * u_t           du_t = dy0 * D_skip
//     g[n]   += Cm_t[n] * dy0                    (now g = total dLoss/dh_t)
//     dB_t[n] = g[n] * d'_t * u_t                du_t += sum_n g[n] d'_t Bm_t[n]
//     dA[n]  += g[n] * d'_t * a_t[n] * h_{t-1}[n]
//     dd'_t   = sum_n g[n] (A[n] a_t[n] h_{t-1}[n] + Bm_t[n] u_t)
//     ddelta_t = dd'_t * sigmoid(dt_t) if softplus (1 for dt_t > 20) else dd'_t;   dbias += ddelta_t
//     g[n]    = g[n] * a_t[n]                    (now g = dLoss/dh_{t-1} through h_t)
//   reset t (real or masked): as above with a_t = 0 (no dA term), so g = 0 below t: h_t ignores h_{t-1}.
//   dinitial_state = g after t = 0.
// dB, dC sum over d; dA over b; dD, dbias over b and t.
//
// Memory: the backward recomputes the states from the inputs (nothing of size B*L*D*N is stored by the forward).
// The CPU backward keeps one (L+1)*N state buffer per (b, d) while it works on that channel; the CUDA backward
// keeps the state entering every 16-step tile (B*D*N*L/16 values) and per-32-channel partial sums of dB, dC
// (B*L*N*D/16 values) in a workspace.
// Determinism: both backends are bitwise reproducible run to run (the CUDA backward sums its partials in a fixed
// order and uses no atomics).
//
// Precision: the CPU kernels compute in T = float or double (bf16 / f16 inputs are converted to f32 by the op).
// The CUDA kernels read the storage dtype (f32, f64, bf16, f16) and compute, keep the state and accumulate in
// f32 (f64 for f64 storage).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mt::kernels {

struct SelectiveScanParams {
  int64_t B = 0, L = 0, D = 0, N = 0;
  // Storage dtype of u, delta, z, Bm, Cm, y, dy, du, ddelta, dz. The CPU kernels accept F32 / F64 only.
  DType dtype = DType::F32;
  // A, D_skip, delta_bias, initial_state, last_state, dlast_state and the "compute" gradients (dA, dD_skip,
  // ddelta_bias, dinitial_state; dBm and dCm on the CPU) are F64 when dtype is F64 and F32 otherwise.
  bool delta_softplus = false;

  // ---- inputs (null = absent where optional) ----
  const void* u = nullptr;
  const void* delta = nullptr;
  const void* A = nullptr;
  const void* Bm = nullptr;
  const void* Cm = nullptr;
  const void* D_skip = nullptr;         // optional
  const void* z = nullptr;              // optional
  const void* delta_bias = nullptr;     // optional
  const void* initial_state = nullptr;  // optional
  const void* mask = nullptr;           // optional, [B, L] of mask_dtype
  DType mask_dtype = DType::F32;
  const int32_t* reset = nullptr;  // optional, [B, L]: nonzero = the state is zeroed before step t
  // Reverse scan: the recurrence walks t = L-1 .. 0 (step s reads position L-1-s), as the scan of the sequence
  // flipped in time would, with every input and output left in its own order (no flipped copies). Resets keep their
  // meaning for the flipped sequence: a document that starts at t is one that ends at t read backwards, so the state
  // is zeroed before the step at t-1. last_state is the state after t = 0.
  bool reverse = false;
  // Elements from one (b, t) row of Bm / Cm to the next; 0 means N (packed). Larger on CUDA when Bm and Cm are column
  // blocks of one wider tensor (x_proj's output), read in place; the CPU kernels take packed rows only.
  int64_t bc_stride = 0;

  // ---- forward outputs ----
  void* y = nullptr;           // storage dtype
  void* last_state = nullptr;  // compute dtype; may be null (not wanted)

  // ---- backward inputs ----
  const void* dy = nullptr;           // storage dtype
  const void* dlast_state = nullptr;  // compute dtype, optional

  // ---- backward outputs ----
  // Storage dtype, fully written: du, ddelta, dz (dz only when z is given).
  void* du = nullptr;
  void* ddelta = nullptr;
  void* dz = nullptr;
  // Compute dtype, overwritten by both backends; dBm and dCm are in the storage dtype on CUDA (their sums over the
  // channels run in the compute dtype and are rounded once, as the op would round the CPU's).
  // dD_skip / ddelta_bias / dinitial_state may be null (not wanted, or the input is absent).
  void* dA = nullptr;
  void* dBm = nullptr;
  void* dCm = nullptr;
  void* dD_skip = nullptr;
  void* ddelta_bias = nullptr;
  void* dinitial_state = nullptr;

  // ---- CUDA only, optional: the state entering every time tile ----
  // [selective_scan_tile_states_numel_cuda(p)] in the compute dtype, laid out as the CUDA kernels use it. When set,
  // the forward writes it, and the backward reads it instead of recomputing it in a pass of its own.
  void* tile_states = nullptr;
};

void selective_scan_fwd_cpu(const SelectiveScanParams& p);
void selective_scan_bwd_cpu(const SelectiveScanParams& p);

// CUDA: defined in kernels/cuda/ in CUDA builds only; callers name it through MT_CUDA_KERNEL (autograd/ops/dispatch.h).
// N <= 64. The backward allocates its workspace (about B*L*D*N/8 compute-dtype values, see above) on the current
// device, through the caching allocator.
constexpr int64_t kSelectiveScanCudaMaxN = 64;
void selective_scan_fwd_cuda(const SelectiveScanParams& p);
void selective_scan_bwd_cuda(const SelectiveScanParams& p);
// Elements of p.tile_states for p's sizes and dtype: B * ceil(L / TT) * N * D (TT = 16, or 8 for f64): 1/16 of the
// B * L * D * N states (100 MB in f32 at B=8 L=2048 D=1536 N=16).
int64_t selective_scan_tile_states_numel_cuda(const SelectiveScanParams& p);

}  // namespace mt::kernels

// CUDA token sampling (math in kernels/sampling.h): one block of 512 threads per row, or for greedy rows with a
// scratch, several blocks per row (greedy_kernel).
//
// Greedy: one pass over the row, an argmax of (key, smallest id) packed into 64 bits. Sampling: a pass writes the
// keys, a second the weights (both into the row's scratch); thresholds are found by radix select on the keys, 8 bits
// per pass from the top, with per-warp histograms of integer weights (counts for top-k, weights for top-p), so the
// result is exact and independent of the order of the atomics; the draw is a walk in id order (each thread sums a
// contiguous chunk, an exclusive scan over threads finds the chunk, its thread walks it). Every pass over the row
// issues kUnroll loads per thread before using any (strided_pass), so a 50k-token row costs a few memory round trips
// per pass rather than one per 512 tokens.
#include "core/cuda/dtype_cuda.cuh"
#include "kernels/cuda/decode_launch.cuh"
#include "kernels/detail/decode_math.h"
#include "kernels/sampling.h"

namespace mt::kernels {

namespace {

using decode_cuda::pdl_launch_dependents;
using decode_cuda::pdl_wait;
using ull = unsigned long long;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 8;

// use(v, load(v)) for v = threadIdx.x, + kThreads, ... < V, the loads of kUnroll consecutive iterations issued first.
template <typename Load, typename Use>
__device__ __forceinline__ void strided_pass(int64_t V, Load load, Use use) {
  using X = decltype(load(int64_t{0}));
  for (int64_t v0 = threadIdx.x; v0 < V; v0 += static_cast<int64_t>(kThreads) * kUnroll) {
    X x[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t v = v0 + static_cast<int64_t>(i) * kThreads;
      if (v < V) x[i] = load(v);
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t v = v0 + static_cast<int64_t>(i) * kThreads;
      if (v < V) use(v, x[i]);
    }
  }
}

struct SampleSmem {
  ull hist[kWarps][256];
  ull total[256];
  ull warp_part[kWarps];
  ull result;
  uint32_t digit;
  ull above;
  int64_t token;
};

__device__ __forceinline__ ull warp_max(ull v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const ull o = __shfl_xor_sync(0xffffffffu, v, off);
    v = o > v ? o : v;
  }
  return v;
}

// Block-wide sum or max of one value per thread; every thread gets the result.
template <bool kMax>
__device__ ull block_reduce(ull v, SampleSmem& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = kMax ? warp_max(v) : decode_cuda::warp_sum(v);
  if (lane == 0) s.warp_part[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    ull r = s.warp_part[0];
    for (int w = 1; w < kWarps; ++w) r = kMax ? (s.warp_part[w] > r ? s.warp_part[w] : r) : r + s.warp_part[w];
    s.result = r;
  }
  __syncthreads();
  const ull r = s.result;
  __syncthreads();  // s.result and s.warp_part may be reused right after
  return r;
}

// Sum of the weights (count 1 each when w is null) of keys >= floor_t.
__device__ ull weight_at_or_above(const uint32_t* keys, const uint32_t* w, int64_t V, uint32_t floor_t, SampleSmem& s) {
  ull acc = 0;
  strided_pass(
      V, [&](int64_t v) { return keys[v] >= floor_t ? (w ? w[v] : 1u) : 0u; }, [&](int64_t, uint32_t x) { acc += x; });
  return block_reduce<false>(acc, s);
}

// The largest key t such that the weight of keys >= t (among keys >= floor_t) is >= target; the caller guarantees
// that all keys >= floor_t weigh at least target >= 1.
__device__ uint32_t select_threshold(const uint32_t* keys, const uint32_t* w, int64_t V, uint32_t floor_t, ull target,
                                     SampleSmem& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t prefix = 0;
  ull above = 0;  // weight of the keys whose digits fixed so far exceed the prefix's
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    const uint32_t hi_mask = pass == 0 ? 0u : (0xffffffffu << (shift + 8));
    for (int i = threadIdx.x; i < kWarps * 256; i += kThreads) (&s.hist[0][0])[i] = 0;
    if (threadIdx.x == 0) {  // overwritten by the lane that finds the digit (one always does, see above)
      s.digit = 0;
      s.above = above;
    }
    __syncthreads();
    strided_pass(
        V, [&](int64_t v) { return keys[v]; },
        [&](int64_t v, uint32_t k) {
          if (k < floor_t || (k & hi_mask) != prefix) return;
          const ull wt = w ? w[v] : 1ull;
          if (wt) atomicAdd(&s.hist[warp][(k >> shift) & 255u], wt);
        });
    __syncthreads();
    for (int d = threadIdx.x; d < 256; d += kThreads) {
      ull t = 0;
      for (int ww = 0; ww < kWarps; ++ww) t += s.hist[ww][d];
      s.total[d] = t;
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l holds digits [8l, 8l + 8); suf = weight of the digits >= 8l.
      ull g = 0;
      for (int j = 0; j < 8; ++j) g += s.total[8 * lane + j];
      ull suf = g;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const ull o = __shfl_down_sync(0xffffffffu, suf, off);
        if (lane + off < 32) suf += o;
      }
      ull suf_next = __shfl_down_sync(0xffffffffu, suf, 1);
      if (lane == 31) suf_next = 0;
      const bool hit = above + suf >= target && above + suf_next < target;
      if (hit) {
        ull cum = above + suf_next;
        int digit = 8 * lane;
        for (int j = 7; j >= 0; --j) {
          const ull t = s.total[8 * lane + j];
          if (cum + t >= target) {
            digit = 8 * lane + j;
            break;
          }
          cum += t;
        }
        s.digit = static_cast<uint32_t>(digit);
        s.above = cum;
      }
    }
    __syncthreads();
    prefix |= s.digit << shift;
    above = s.above;
    __syncthreads();
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleParams p) {
  __shared__ SampleSmem s;
  pdl_wait();
  pdl_launch_dependents();
  const int64_t b = blockIdx.x, V = p.V;
  const float* lg = p.logits + b * V;
  const uint32_t* seen = p.seen ? p.seen + b * p.seen_words : nullptr;
  const bool greedy = p.temperature == 0.0f;
  uint32_t* keys = greedy ? nullptr : p.scratch + b * 2 * V;
  uint32_t* wts = greedy ? nullptr : keys + V;
  auto scaled = [&](int64_t v, float raw) {
    const bool sn = seen && ((seen[v >> 5] >> (v & 31)) & 1u);
    return decode::scaled_logit(raw, sn, p.repetition_penalty, p.temperature);
  };
  auto raw_logit = [&](int64_t v) { return lg[v]; };

  // Pass 1: keys and the argmax (largest key, then smallest id).
  ull best = 0;
  strided_pass(V, raw_logit, [&](int64_t v, float raw) {
    const uint32_t k = decode::order_key(scaled(v, raw));
    if (keys) keys[v] = k;
    const ull packed = (static_cast<ull>(k) << 32) | (0xffffffffull - static_cast<ull>(v));
    best = packed > best ? packed : best;
  });
  best = block_reduce<true>(best, s);
  const uint32_t best_key = static_cast<uint32_t>(best >> 32);
  const int64_t best_id = static_cast<int64_t>(0xffffffffull - (best & 0xffffffffull));
  int64_t token = best_id;
  const int64_t step = *p.step;

  if (!greedy && best_key != 0u) {
    // Pass 2: weights.
    const float max_l = scaled(best_id, lg[best_id]);
    strided_pass(V, raw_logit,
                 [&](int64_t v, float raw) { wts[v] = decode::token_weight(scaled(v, raw), max_l, keys[v]); });
    __syncthreads();
    uint32_t t = 0;
    if (p.top_k > 0 && p.top_k < V) t = select_threshold(keys, nullptr, V, 0u, static_cast<ull>(p.top_k), s);
    if (p.top_p < 1.0) {
      const ull total = weight_at_or_above(keys, wts, V, t, s);
      ull target = decode::top_p_target(p.top_p, total);
      target = target < 1 ? 1 : target;
      const uint32_t tp = select_threshold(keys, wts, V, t, target, s);
      t = tp > t ? tp : t;
    }
    const ull kept = weight_at_or_above(keys, wts, V, t, s);
    const ull target = decode::draw_target(decode::sample_uniform(p.seed, step, p.row_ids[b]), kept);
    // The draw: thread i sums its contiguous chunk of ids, an exclusive scan over threads locates the chunk.
    const int64_t chunk = (V + kThreads - 1) / kThreads;
    const int64_t v0 = threadIdx.x * chunk, v1 = v0 + chunk < V ? v0 + chunk : V;
    ull mine = 0;
#pragma unroll 8
    for (int64_t v = v0; v < v1; ++v)
      if (keys[v] >= t) mine += wts[v];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    ull incl = mine;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const ull o = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += o;
    }
    if (lane == 31) s.warp_part[warp] = incl;
    if (threadIdx.x == 0) s.token = best_id;
    __syncthreads();
    ull offset = incl - mine;
    for (int w = 0; w < warp; ++w) offset += s.warp_part[w];
    if (mine > 0 && offset <= target && target < offset + mine) {
      ull cum = offset;
      for (int64_t v = v0; v < v1; ++v) {
        if (keys[v] < t) continue;
        cum += wts[v];
        if (cum > target) {
          s.token = v;
          break;
        }
      }
    }
    __syncthreads();
    token = s.token;
  }
  if (threadIdx.x == 0) {
    p.tokens[b] = token;
    if (p.history && step >= 0 && step < p.history_len) p.history[b * p.history_len + step] = token;
    if (p.seen) p.seen[b * p.seen_words + (token >> 5)] |= 1u << (token & 31);
  }
}

// Greedy rows over several blocks each (grid G x B, scratch given): block g scans its slice of the row and writes
// its packed argmax into the row's scratch; the last block of the row to finish (a counter in the scratch, reset by
// that block for the next step) takes the maximum of the slices' and writes the token. The maximum of packed
// (key, id) values does not depend on the order, so this is the one-block kernel's token. A thread loads its
// kGreedyUnroll logits of a round before using any (one memory round trip per round: one for slices of
// kGreedyThreads * kGreedyUnroll), and the last block reads the G slice maxima with all its threads.
constexpr int kGreedyThreads = 256;
constexpr int kGreedyUnroll = 16;
// Blocks per SM the launch bounds ask for: 8 holds a thread at 32 registers, so that a batch of 64 rows (13 blocks
// each for a vocabulary of 50,280) runs in one wave; the repetition-penalty variant needs more registers (40).
constexpr int kGreedyBlocksPerSm = 8;
constexpr int kGreedyScaledBlocksPerSm = 6;

template <bool kScaled>
__global__ void __launch_bounds__(kGreedyThreads, kScaled ? kGreedyScaledBlocksPerSm : kGreedyBlocksPerSm)
    greedy_kernel(SampleParams p) {
  __shared__ ull warp_best[kGreedyThreads / 32];
  __shared__ bool last;
  pdl_wait();
  pdl_launch_dependents();
  const int64_t b = blockIdx.y;
  // 32-bit ids (V < 2^31, so r0 + kGreedyUnroll * kGreedyThreads cannot wrap).
  const uint32_t V = static_cast<uint32_t>(p.V), G = gridDim.x;
  const uint32_t chunk = (V + G - 1) / G, v0 = blockIdx.x * chunk, v1 = v0 + chunk < V ? v0 + chunk : V;
  const float* lg = p.logits + b * p.V;
  // The seen bits matter only with a repetition penalty (decode::scaled_logit). Without one (kScaled false) the
  // key is the logit's own.
  const uint32_t* seen = kScaled && p.seen && p.repetition_penalty != 1.0f ? p.seen + b * p.seen_words : nullptr;
  // The thread visits its ids in increasing order, so its first largest key (strict >) is the one with the smallest
  // id among its ties; the packed (key, id) value is formed once, after the loop, so each logit costs a 32-bit compare.
  uint32_t best_k = 0, best_v = 0xffffffffu;  // 0xffffffff: none yet
#pragma unroll 1
  for (uint32_t r0 = v0 + threadIdx.x; r0 < v1; r0 += kGreedyThreads * kGreedyUnroll) {
    // Offsets from one base pointer, bounds against one count: constants in the loads and compares.
    const float* q = lg + r0;
    const uint32_t n = v1 - r0;
    float x[kGreedyUnroll];
#pragma unroll
    for (int u = 0; u < kGreedyUnroll; ++u)
      x[u] = static_cast<uint32_t>(u * kGreedyThreads) < n ? q[u * kGreedyThreads] : 0.0f;
#pragma unroll
    for (int u = 0; u < kGreedyUnroll; ++u) {
      if (static_cast<uint32_t>(u * kGreedyThreads) >= n) break;
      const uint32_t v = r0 + u * kGreedyThreads;
      uint32_t k;
      if constexpr (kScaled) {
        const bool sn = seen && ((seen[v >> 5] >> (v & 31)) & 1u);
        k = decode::order_key(decode::scaled_logit(x[u], sn, p.repetition_penalty, p.temperature));
      } else {
        k = decode::order_key(x[u]);
      }
      if (k > best_k || best_v == 0xffffffffu) {
        best_k = k;
        best_v = v;
      }
    }
  }
  ull best = best_v == 0xffffffffu ? 0 : (static_cast<ull>(best_k) << 32) | (0xffffffffull - best_v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto block_max = [&](ull v) {
    v = warp_max(v);
    if (lane == 0) warp_best[warp] = v;
    __syncthreads();
    ull m = warp_best[0];
    for (int w = 1; w < kGreedyThreads / 32; ++w) m = warp_best[w] > m ? warp_best[w] : m;
    return m;
  };
  best = block_max(best);
  // The row's scratch (2 V words, 8-byte aligned): G packed maxima, then the count of blocks done.
  uint32_t* row = p.scratch + b * 2 * V;
  ull* partial = reinterpret_cast<ull*>(row);
  unsigned int* done = row + 2 * G;
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = best;
    __threadfence();  // the slice's maximum is visible before the count says so
    last = atomicAdd(done, 1u) == static_cast<unsigned int>(G - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  ull m = 0;
  for (int64_t g = threadIdx.x; g < G; g += kGreedyThreads) {
    const ull x = reinterpret_cast<volatile ull*>(partial)[g];
    m = x > m ? x : m;
  }
  __syncthreads();  // warp_best is reused
  m = block_max(m);
  if (threadIdx.x != 0) return;
  *done = 0;  // ready for the next step (a replayed graph)
  const int64_t token = static_cast<int64_t>(0xffffffffull - (m & 0xffffffffull));
  const int64_t step = *p.step;
  p.tokens[b] = token;
  if (p.history && step >= 0 && step < p.history_len) p.history[b * p.history_len + step] = token;
  if (p.seen) p.seen[b * p.seen_words + (token >> 5)] |= 1u << (token & 31);
}

}  // namespace

int64_t sample_greedy_blocks_cuda(int64_t V) {
  // Slices of at least kGreedyThreads * kGreedyUnroll logits (one load round per thread), at most
  // kSampleGreedyMaxBlocks of them.
  const int64_t g = (V + kGreedyThreads * kGreedyUnroll - 1) / (kGreedyThreads * kGreedyUnroll);
  return g < kSampleGreedyMaxBlocks ? (g > 0 ? g : 1) : kSampleGreedyMaxBlocks;
}

void sample_cuda(const SampleParams& p) {
  sample_check(p);
  MT_ASSERT(p.temperature == 0.0f || p.scratch, "sample_cuda: sampling needs the scratch buffer");
  MT_CHECK(p.V < (int64_t{1} << 32), ErrorKind::Shape, "sample_cuda: vocabulary ", p.V, " exceeds 2^32");
  if (p.B == 0) return;
  if (p.temperature == 0.0f && p.scratch && p.V >= 2 && p.V < (int64_t{1} << 31)) {  // the row's 2 V words hold 2 g + 1
    const unsigned g = static_cast<unsigned>(sample_greedy_blocks_cuda(p.V));
    // Greedy has temperature 0, so only a repetition penalty changes the keys.
    auto kernel = p.seen && p.repetition_penalty != 1.0f ? greedy_kernel<true> : greedy_kernel<false>;
    decode_cuda::launch(kernel, dim3(g, static_cast<unsigned>(p.B)), dim3(kGreedyThreads), 0, p.pdl, p);
    return;
  }
  decode_cuda::launch(sample_kernel, dim3(static_cast<unsigned>(p.B)), dim3(kThreads), 0, p.pdl, p);
}

}  // namespace mt::kernels

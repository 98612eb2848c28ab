#include "train/op_breakdown.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "core/error.h"
#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_context.h"
#endif

namespace mt::train {

struct OpBreakdown::Impl {
  Device dev;
  std::map<std::string, double> ms;
  std::map<std::string, int64_t> calls_per_op;
  // CPU: the open call's start.
  std::chrono::steady_clock::time_point t0;
#if defined(MT_WITH_CUDA)
  // CUDA: events reused from step to step; pairs[i] = (op, begin event index) of the calls since the last collect.
  std::vector<cudaEvent_t> events;
  size_t used = 0;
  std::vector<std::pair<std::string, size_t>> calls;
  cudaEvent_t next() {
    if (used == events.size()) {
      cudaEvent_t e;
      MT_CUDA_CHECK(cudaEventCreate(&e));
      events.push_back(e);
    }
    return events[used++];
  }
#endif
};

OpBreakdown::OpBreakdown(Device dev) : impl_(new Impl) {
  impl_->dev = dev;
  set_op_timer(this);
}

OpBreakdown::~OpBreakdown() {
  set_op_timer(nullptr);
#if defined(MT_WITH_CUDA)
  for (cudaEvent_t e : impl_->events) cudaEventDestroy(e);
#endif
  delete impl_;
}

void OpBreakdown::begin(const char* op, bool cuda) {
#if defined(MT_WITH_CUDA)
  if (cuda) {
    const size_t i = impl_->used;
    MT_CUDA_CHECK(cudaEventRecord(impl_->next(), CudaContext::get().stream()));
    impl_->calls.emplace_back(op, i);
    return;
  }
#endif
  (void)op;
  (void)cuda;
  impl_->t0 = std::chrono::steady_clock::now();
}

void OpBreakdown::end(const char* op, bool cuda) {
#if defined(MT_WITH_CUDA)
  if (cuda) {
    MT_CUDA_CHECK(cudaEventRecord(impl_->next(), CudaContext::get().stream()));
    return;
  }
#endif
  (void)cuda;
  impl_->ms[op] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - impl_->t0).count();
  ++impl_->calls_per_op[op];
}

std::map<std::string, double> OpBreakdown::collect(std::map<std::string, int64_t>* calls) {
#if defined(MT_WITH_CUDA)
  if (!impl_->calls.empty()) {
    MT_CUDA_CHECK(cudaEventSynchronize(impl_->events[impl_->used - 1]));
    for (const auto& c : impl_->calls) {
      float ms = 0;
      MT_CUDA_CHECK(cudaEventElapsedTime(&ms, impl_->events[c.second], impl_->events[c.second + 1]));
      impl_->ms[c.first] += ms;
      ++impl_->calls_per_op[c.first];
    }
    impl_->calls.clear();
    impl_->used = 0;
  }
#endif
  if (calls)
    for (const auto& kv : impl_->calls_per_op) (*calls)[kv.first] += kv.second;
  impl_->calls_per_op.clear();
  std::map<std::string, double> out;
  out.swap(impl_->ms);
  return out;
}

std::string op_class(const std::string& op) {
  if (op == "matmul") return "GEMMs";
  if (op == "selective_scan" || op == "selective_scan_bidir") return "selective scan";
  if (op == "causal_conv1d") return "causal conv1d";
  if (op == "adamw" || op == "grad_global_norm" || op == "first_nonfinite_grad") return "optimizer";
  if (op == "linear_cross_entropy" || op == "cross_entropy" || op == "log_softmax") return "LM head + loss";
  // Named "tensor_copy <dtypes and shape>" etc. (core/tensor.cpp).
  if (op.rfind("tensor_copy", 0) == 0) return "tensor copies outside the ops";
  if (op.rfind("tensor_cast", 0) == 0) return "dtype casts outside the ops";
  if (op.rfind("tensor_fill", 0) == 0) return "fills outside the ops";
  if (op.find("norm") != std::string::npos) return "norms";
  return "elementwise, reductions, embedding, pooling";
}

std::vector<BreakdownRow> breakdown_table(const std::map<std::string, double>& op_ms, double step_ms) {
  std::map<std::string, double> by_class;
  double sum = 0;
  for (const auto& kv : op_ms) {
    by_class[op_class(kv.first)] += kv.second;
    sum += kv.second;
  }
  std::vector<BreakdownRow> rows;
  for (const auto& kv : by_class) rows.push_back({kv.first, kv.second});
  std::stable_sort(rows.begin(), rows.end(), [](const BreakdownRow& a, const BreakdownRow& b) { return a.ms > b.ms; });
  rows.push_back({"launch gaps and host work", std::max(0.0, step_ms - sum)});
  return rows;
}

}  // namespace mt::train

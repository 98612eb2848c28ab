#include "train/dist/grad_sync.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "core/error.h"

namespace mt::train {

#if defined(MT_WITH_NCCL)
std::unique_ptr<GradBackend> make_nccl_backend(ControlPlane& cp, Device dev, int64_t total_numel);  // nccl_backend.cpp
#endif

std::vector<std::vector<size_t>> plan_buckets(const std::vector<int64_t>& numels, int64_t bucket_bytes) {
  std::vector<std::vector<size_t>> out;
  int64_t bytes = 0;
  for (size_t k = numels.size(); k-- > 0;) {
    if (out.empty() || bytes >= bucket_bytes) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(k);
    bytes += numels[k] * static_cast<int64_t>(sizeof(float));
  }
  return out;
}

namespace {

// Sums one bucket over the control plane: gradients packed into one host buffer, reduced, unpacked.
void tcp_reduce(ControlPlane& cp, int b, const std::vector<Tensor>& grads) {
  int64_t n = 0;
  for (const Tensor& g : grads) n += g.numel();
  std::vector<float> flat(static_cast<size_t>(n));
  int64_t off = 0;
  for (const Tensor& g : grads) {
    const Tensor h = !g.is_cuda() ? g : g.to(Device::cpu());
    std::memcpy(flat.data() + off, h.data<float>(), static_cast<size_t>(g.numel()) * sizeof(float));
    off += g.numel();
  }
  cp.all_reduce_sum(flat.data(), flat.size(), str("all-reduce of gradient bucket ", b));
  off = 0;
  for (const Tensor& g : grads) {
    if (!g.is_cuda()) {
      std::memcpy(g.data<float>(), flat.data() + off, static_cast<size_t>(g.numel()) * sizeof(float));
    } else {
      Tensor h = Tensor::empty(g.shape(), DType::F32, Device::cpu());
      std::memcpy(h.data<float>(), flat.data() + off, static_cast<size_t>(g.numel()) * sizeof(float));
      g.copy_(h);
    }
    off += g.numel();
  }
}

class TcpBackend : public GradBackend {
 public:
  TcpBackend(ControlPlane& cp, bool async) : cp_(cp), async_(async) {}
  ~TcpBackend() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (th_.joinable()) th_.join();
  }
  std::string name() const override { return async_ ? "tcp" : "tcp (host-staged)"; }

  void launch(int b, const std::vector<Tensor>& grads) override {
    if (!async_) {
      deferred_.emplace_back(b, grads);
      return;
    }
    if (!th_.joinable()) th_ = std::thread([this] { work(); });
    {
      std::lock_guard<std::mutex> l(mu_);
      q_.emplace_back(b, grads);
      ++launched_;
    }
    cv_.notify_all();
  }

  void wait_all() override {
    if (!async_) {
      for (auto& d : deferred_) tcp_reduce(cp_, d.first, d.second);
      deferred_.clear();
      return;
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return done_ == launched_; });
    if (err_) {
      std::exception_ptr e = err_;
      err_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void work() {
    for (;;) {
      std::pair<int, std::vector<Tensor>> job;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        job = std::move(q_.front());
        q_.pop_front();
      }
      std::exception_ptr e;
      if (!failed_) {
        try {
          tcp_reduce(cp_, job.first, job.second);
        } catch (...) {
          e = std::current_exception();
          failed_ = true;  // the plane is out of step now: later buckets are not attempted
        }
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        if (e && !err_) err_ = e;
        ++done_;
      }
      cv_.notify_all();
    }
  }

  ControlPlane& cp_;
  bool async_;
  std::vector<std::pair<int, std::vector<Tensor>>> deferred_;
  std::thread th_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<int, std::vector<Tensor>>> q_;
  int64_t launched_ = 0, done_ = 0;
  std::exception_ptr err_;
  bool stop_ = false, failed_ = false;
};

}  // namespace

std::string default_grad_backend(Device dev) {
#if defined(MT_WITH_NCCL)
  if (dev.is_cuda()) return "nccl";
#endif
  (void)dev;
  return "tcp";
}

std::unique_ptr<GradBackend> make_grad_backend(const std::string& backend, ControlPlane& cp, Device dev,
                                               int64_t total_numel) {
  if (backend == "tcp") return std::make_unique<TcpBackend>(cp, /*async=*/dev.is_cpu());
  if (backend == "nccl") {
#if defined(MT_WITH_NCCL)
    MT_CHECK(dev.is_cuda(), ErrorKind::Config, "distributed.backend: nccl needs run.device cuda (got ", dev.str(),
             "); use tcp on the CPU");
    return make_nccl_backend(cp, dev, total_numel);
#else
    throw_error(ErrorKind::Config, "distributed.backend: nccl is not in this build (built without CUDA/NCCL); use tcp");
#endif
  }
  throw_error(ErrorKind::Config, str("distributed.backend: expected auto, nccl or tcp, got '", backend, "'"));
}

GradSync::GradSync(const std::vector<Tensor*>& params, std::unique_ptr<GradBackend> backend, int64_t bucket_bytes)
    : params_(params), backend_(std::move(backend)) {
  std::vector<int64_t> numels;
  for (Tensor* p : params_) numels.push_back(p->numel());
  buckets_ = plan_buckets(numels, bucket_bytes);
  bucket_of_.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t i : buckets_[b]) bucket_of_[i] = b;
  pending_.assign(buckets_.size(), 0);
  ready_.assign(params_.size(), 0);
  alive_ = std::make_shared<GradSync*>(this);
  std::weak_ptr<GradSync*> w = alive_;
  for (size_t i = 0; i < params_.size(); ++i)
    add_grad_ready_hook(*params_[i], [w, i](const Tensor&) {
      if (auto s = w.lock())
        if ((*s)->armed_) (*s)->on_ready(i);
    });
}

GradSync::~GradSync() = default;

void GradSync::arm(std::vector<Tensor> carried) {
  MT_CHECK(carried.empty() || carried.size() == params_.size(), ErrorKind::Internal, "GradSync::arm: ", carried.size(),
           " carried gradients for ", params_.size(), " parameters");
  carried_ = std::move(carried);
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].size());
  std::fill(ready_.begin(), ready_.end(), 0);
  next_ = 0;
  launched_early_ = 0;
  armed_ = true;
}

void GradSync::on_ready(size_t i) {
  if (ready_[i]) return;  // a hook fires once per backward; be safe against repeats
  ready_[i] = 1;
  --pending_[bucket_of_[i]];
  launch_ready_prefix();
}

void GradSync::launch_ready_prefix() {
  while (next_ < buckets_.size() && pending_[next_] == 0) {
    launch(next_++);
    ++launched_early_;
  }
}

void GradSync::launch(size_t b) {
  std::vector<Tensor> grads;
  for (size_t i : buckets_[b]) {
    Tensor g = grad(*params_[i]);
    if (!carried_.empty() && carried_[i].defined()) {
      NoGradGuard ng;
      g = g.defined() ? add(carried_[i], g) : carried_[i];
      carried_[i] = Tensor();
      set_grad(*params_[i], g);
    }
    if (!g.defined()) {  // unused by this rank's batch: it still takes part, with zeros
      g = Tensor::zeros(params_[i]->shape(), DType::F32, params_[i]->device());
      set_grad(*params_[i], g);
    } else if (!g.is_contiguous()) {
      g = g.contiguous();
      set_grad(*params_[i], g);
    }
    MT_CHECK(g.dtype() == DType::F32, ErrorKind::Internal, "gradient of parameter ", i, " is ", dtype_name(g.dtype()),
             ", the all-reduce expects f32 (the fp32 masters' gradients)");
    grads.push_back(g);
  }
  backend_->launch(static_cast<int>(b), grads);
}

void GradSync::finish() {
  MT_CHECK(armed_, ErrorKind::Internal, "GradSync::finish without arm");
  armed_ = false;
  while (next_ < buckets_.size()) launch(next_++);
  carried_.clear();
  backend_->wait_all();
}

}  // namespace mt::train

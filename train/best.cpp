#include "train/best.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mt::train {

bool monitor_minimizes(const std::string& monitor, const std::string& mode) {
  if (mode == "min") return true;
  if (mode == "max") return false;
  const std::string key = monitor.rfind("eval.", 0) == 0 ? monitor.substr(5) : monitor;
  return key == "loss" || key == "perplexity" || key.rfind("bits_per_", 0) == 0;
}

BestTracker::BestTracker(const std::string& monitor, const std::string& mode, int64_t keep)
    : monitor_(monitor), minimize_(monitor_minimizes(monitor, mode)), keep_(std::max<int64_t>(1, keep)) {}

double BestTracker::value_of(const nlohmann::json& eval) const {
  const std::string key = monitor_.rfind("eval.", 0) == 0 ? monitor_.substr(5) : monitor_;
  if (eval.is_object() && eval.contains(key) && eval[key].is_number()) return eval[key].get<double>();
  std::string have;
  if (eval.is_object())
    for (auto it = eval.begin(); it != eval.end(); ++it)
      if (it.value().is_number()) have += (have.empty() ? "eval." : ", eval.") + it.key();
  throw Error(ErrorKind::Config, str("checkpoint.monitor: '", monitor_,
                                     "' is not a number of this task's evaluation record (it has: ", have, ")"));
}

bool BestTracker::update(int64_t step, double value) {
  last_improved_ = false;
  if (!enabled()) return false;
  if (std::isnan(value)) {
    ++evals_since_best_;
    return false;
  }
  auto better = [&](double a, double b) { return minimize_ ? a < b : a > b; };
  last_improved_ = top_.empty() || better(value, top_.front().second);
  evals_since_best_ = last_improved_ ? 0 : evals_since_best_ + 1;
  // A step evaluated again (a resume repeating it) replaces its entry; the value goes after every value at least as
  // good (an earlier checkpoint keeps its place on a tie).
  top_.erase(std::remove_if(top_.begin(), top_.end(), [&](const auto& e) { return e.first == step; }), top_.end());
  auto at = std::find_if(top_.begin(), top_.end(), [&](const auto& e) { return better(value, e.second); });
  const bool entered = at - top_.begin() < keep_;
  if (entered) top_.insert(at, {step, value});
  if (static_cast<int64_t>(top_.size()) > keep_) top_.resize(static_cast<size_t>(keep_));
  return entered;
}

std::vector<int64_t> BestTracker::steps() const {
  std::vector<int64_t> out;
  for (const auto& e : top_) out.push_back(e.first);
  return out;
}

std::string BestTracker::state() const {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& e : top_) top.push_back({e.first, e.second});
  return nlohmann::json{
      {"monitor", monitor_}, {"minimize", minimize_}, {"top", top}, {"evals_since_best", evals_since_best_}}
      .dump();
}

bool BestTracker::restore(const std::string& state) {
  const nlohmann::json j = nlohmann::json::parse(state, nullptr, false);
  if (!enabled() || !j.is_object() || j.value("monitor", "") != monitor_ ||
      j.value("minimize", !minimize_) != minimize_)
    return false;
  std::vector<std::pair<int64_t, double>> top;
  if (j.contains("top") && j["top"].is_array())
    for (const auto& e : j["top"])
      if (e.is_array() && e.size() == 2 && e[0].is_number_integer() && e[1].is_number())
        top.emplace_back(e[0].get<int64_t>(), e[1].get<double>());
  if (static_cast<int64_t>(top.size()) > keep_) top.resize(static_cast<size_t>(keep_));
  top_ = std::move(top);
  evals_since_best_ = j.value("evals_since_best", int64_t{0});
  return true;
}

}  // namespace mt::train

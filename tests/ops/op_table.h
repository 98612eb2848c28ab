// The op table: every op registers here once, under its name (kernels/<name>.h, autograd/ops/<name>.h), with cases
// that cover its shapes (awkward sizes included), dtypes and flags. Two harnesses run the whole table:
//   tests/ops/test_op_table.cpp (CPU, in CI): for every case a gradcheck in f64, and the CPU in every other dtype
//     against the CPU in f64 on the same dtype-rounded inputs; plus: every kernels/*.h and autograd/ops/*.h has
//     an entry.
//   tests/cuda/test_cuda_op_table.cpp (label cuda): CUDA against the CPU, forward and backward, in every dtype the
//     case lists, with fresh memory poisoned (0xFF bytes, NaN) so an output a kernel does not write fails.
// Kernels with no differentiable op (the optimizer's adamw and grad_check, the decode kernels decode_gemv, sampling
// and ssm_step) register checks of their own instead.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "core/tensor.h"

namespace mt::test {

// How a float input is stored when a case runs in dtype dt. Integer inputs (ids, targets, masks) pass unchanged.
enum class Role {
  Data,    // dt: activations
  Master,  // f32, or f64 when dt is f64: weights and states kept in full precision (norm weight, the scan's A)
};

struct OpInput {
  Tensor value;  // on the CPU; float values in f64. Undefined: an absent optional input (passed as undefined)
  Role role = Role::Data;
  bool grad = true;  // differentiated (float inputs only)
};

// |actual - ref| <= abs + atol * max|ref| + rtol * |ref| for every element; NaN never passes.
struct Tol {
  double rtol = 0, atol = 0, abs = 0;
};

// Every dtype a CUDA kernel takes.
inline const std::vector<DType> kAllFloat = {DType::F32, DType::BF16, DType::F16, DType::F64};

struct OpCase {
  std::string what;  // shape and flags, for messages
  std::vector<OpInput> inputs;
  // The op on the inputs (in order; absent ones undefined) -> its outputs (undefined ones are skipped).
  std::function<std::vector<Tensor>(const std::vector<Tensor>&)> run;
  bool gradcheck = true;                  // false: not gradchecked (large cases; outputs rounded to 16 bits)
  GradcheckOptions gc;                    // the gradcheck's tolerances
  std::vector<DType> dtypes = kAllFloat;  // compared: CUDA vs CPU (and the CPU vs its f64 run for every dtype but f64)
  std::function<Tol(DType)> tol;          // per dtype; unset: default_tol
};

OpCase op_case(std::string what, std::vector<OpInput> inputs,
               std::function<std::vector<Tensor>(const std::vector<Tensor>&)> run);

struct OpEntry {
  std::string name;  // kernels/<name>.h / autograd/ops/<name>.h
  // The cases; with big also the large ones (CUDA sizes, compared on CUDA only: not built for the CPU harness).
  std::function<std::vector<OpCase>(bool big)> cases;
  // Kernels without an autograd op: their own checks (each its own gtest assertions).
  std::function<void()> cpu_check;   // in the CPU harness
  std::function<void()> cuda_check;  // in the CUDA harness (skipped without a GPU)
};

// The decode kernels' own checks (tests/ops/decode_checks.cpp).
void decode_gemv_cpu_check();
void decode_gemv_cuda_check();
void sampling_cpu_check();
void sampling_cuda_check();
void ssm_step_cpu_check();
void ssm_step_cuda_check();

// The whole table, in name order; one entry by name; the names of the entries keep accepts (the harnesses' test
// parameters).
const std::vector<OpEntry>& op_table();
const OpEntry& op_entry(const std::string& name);
std::vector<std::string> op_names(const std::function<bool(const OpEntry&)>& keep);

// f32: 1e-4 relative and 1e-5 of the largest value; bf16 / f16: 3e-2 relative, 1e-2 of the largest value and 1e-3
// absolute (a 16-bit output near 0, or a gradient from a rounded output such as tanh's, is that coarse); f64: 1e-10.
Tol default_tol(DType dt);

// One run of a case: its inputs stored for dt (Role), copied to dev as fresh leaves, the op, then one backward
// with a fixed random upstream gradient per output (rounded to dt, then in the output's dtype: the same values on
// every device). f64_reference: the same dt-rounded inputs and gradients, run in f64.
struct OpRun {
  std::vector<std::string> names;           // "output 0", ..., "grad of input 2", ...
  std::vector<std::vector<double>> values;  // in that order
};
OpRun run_case(const OpCase& c, DType dt, Device dev, bool f64_reference = false);

// Compare actual with ref value by value under t; adds a gtest failure per mismatching tensor.
void expect_runs_match(const OpRun& actual, const OpRun& ref, const Tol& t, const std::string& what);

// Poisoning of fresh memory (core/tensor.h) on for a scope, restored after.
class PoisonFreshMemory {
 public:
  PoisonFreshMemory() : before_(poison_fresh_memory()) { set_poison_fresh_memory(true); }
  ~PoisonFreshMemory() { set_poison_fresh_memory(before_); }
  PoisonFreshMemory(const PoisonFreshMemory&) = delete;
  PoisonFreshMemory& operator=(const PoisonFreshMemory&) = delete;

 private:
  bool before_;
};

// A differentiable flatten-and-concatenate of all defined outputs in f64 (the gradcheck's single output).
Tensor pack_all(const std::vector<Tensor>& outs);

}  // namespace mt::test

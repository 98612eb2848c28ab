// Parameter initialisation exactly as state-spaces/mamba (docs/DESIGN.md "Initialisation"), not framework defaults.
#pragma once

#include <string>

#include "core/rng.h"
#include "core/tensor.h"
#include "nn/config.h"

namespace mt::nn {

// In-place fills (no autograd). Values come from the counter-based generator, on the CPU, then are copied to the
// parameter's device, so a given seed gives the same model on every device.
void init_uniform(Tensor& t, Generator& gen, double lo, double hi);
void init_normal(Tensor& t, Generator& gen, double mean, double std);

// dt_proj.bias = inverse_softplus(dt), dt = exp(U(0,1) * (ln dt_max - ln dt_min) + ln dt_min) clamped >= floor.
void init_dt_bias(Tensor& bias, Generator& gen, const MambaConfig& cfg);
// A_log[d, n] = log(n + 1) (S4D-real).
void init_A_log(Tensor& A_log);

class MambaBackbone;
// Checks the invariants that a wrong (re-)initialisation breaks; returns "" if all hold, else what failed:
// softplus(dt_proj.bias) within [dt_min, dt_max] (allowing the floor), A_log finite, D finite.
// `after_training` relaxes the dt range (training moves it) to finiteness only.
std::string check_init_invariants(const MambaBackbone& model, bool after_training = false);

}  // namespace mt::nn

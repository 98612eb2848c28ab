// Fault sites for the reliability harness (issue 8). The library only calls fault_point(); what a site does is
// decided by a handler that the test builds register (tests/fault_provider.cpp: the test executables and
// mamba-train-faults read MT_FAULT). The release mamba-train registers none, so there every site is a null check and
// no environment variable can make it misbehave.
//
// Sites (value in brackets):
//   step_end [step]        after an optimizer step, before logging / checkpointing (kill, freeze, exit a rank)
//   loss [step]            the next step's loss becomes NaN / inf (returns true)
//   grad [step]            a gradient of the next step becomes NaN / inf after backward (returns true)
//   checkpoint:<stage>     each stage of a checkpoint save (train/checkpoint_io.h names them)
//   write [bytes]          before each write(2) of a durable file: returns true -> fail with the handler's errno
//   fsync [0]              before fsync(2) of a durable file: returns true -> fail with the handler's errno
#pragma once

#include <cstdint>

namespace mt::train {

// Returns true when the fault for this site fires and the caller must inject it; *err (when given) receives the
// errno to fail with (write / fsync sites). A handler may also end the process itself (kill, exit, freeze).
using FaultHandler = bool (*)(const char* site, int64_t value, int* err);
void set_fault_handler(FaultHandler h);
bool fault_point(const char* site, int64_t value = 0, int* err = nullptr);

}  // namespace mt::train

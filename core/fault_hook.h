// Fault sites for the reliability harness (issue 8). The library only calls fault_point(); what a site does is
// decided by a handler that the test builds register (tests/fault_provider.cpp: the test executables and
// mamba-train-faults read MT_FAULT). The release mamba-train registers none, so there every site is a null check and
// no environment variable can make it misbehave.
//
// Sites (value in brackets):
//   step_end [step]        after an optimizer step, before logging / checkpointing (kill, freeze, exit a rank)
//   loss [step]            the next step's loss becomes NaN / inf (returns true)
//   grad [step]            a gradient of the next step becomes NaN / inf after backward (returns true)
//   checkpoint:<stage>     each stage of a checkpoint save (train/ckpt/checkpoint_io.h names them)
//   write [bytes]          before the payload write of a checkpoint file: true -> half is written, then it fails with
//                          the handler's errno (ENOSPC, EIO)
//   fsync [0]              before fsync(2) of a checkpoint file: true -> fails with the handler's errno
//   alloc [bytes]          a host allocation: true -> it fails (mt::Error OutOfMemory, exit 7)
#pragma once

#include <cstdint>

namespace mt {

// Returns true when the fault for this site fires and the caller must inject it; *err (when given) receives the
// errno to fail with (write / fsync sites). A handler may also end the process itself (kill, exit, freeze).
using FaultHandler = bool (*)(const char* site, int64_t value, int* err);
void set_fault_handler(FaultHandler h);
bool fault_point(const char* site, int64_t value = 0, int* err = nullptr);

}  // namespace mt

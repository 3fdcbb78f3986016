// splatjax CUDA-on-CPU emulation: what the FFI bridge needs from the runtime (runtime.cc).
#pragma once

#include <cstddef>
#include <string>

#include "sjemu/emu.h"

#define SJEMU_EXPORT extern "C" __attribute__((visibility("default")))

namespace sjemu {

// One stream per emulated FFI call; work runs when the stream is flushed (after the
// handler returned, as a GPU runs it after the host queued it). flush() returns the first
// error text ("" when every queued operation succeeded).
CUstream_st* new_stream();
std::string flush(CUstream_st* stream);
void delete_stream(CUstream_st* stream);
// Queued after everything else on the stream and run even after an error (frees).
void enqueue_always(cudaStream_t stream, const char* what, std::function<std::string()> run);

// Device memory known to the emulator (FFI buffers and scratch allocations).
void add_region(const void* p, size_t bytes, const std::string& name);
void remove_region(const void* p);

// Rule violations recorded since the last call (joined with "; ").
std::string take_violations();

// Statistics of scratch allocations (count, bytes, largest alignment asked for).
void note_scratch(size_t bytes, size_t alignment);

// The error injected into the nth call of an API, if armed (see sjemu_set "fail").
cudaError_t injected(const char* api);

// Scratch memory under XLA's FFI rules (ffi_bridge.cc): null with *err set (and *code an
// XLA_FFI_Error_Code) when refused, null without error for size 0. The free is queued on the
// stream; when it runs it checks the red zones (its error fails the flush) and poisons.
void* scratch_allocate(size_t size, size_t alignment, int* code, std::string* err);
void scratch_free(CUstream_st* stream, void* data, size_t size);

}  // namespace sjemu

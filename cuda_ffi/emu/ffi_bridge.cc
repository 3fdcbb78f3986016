// splatjax CUDA-on-CPU emulation: the XLA FFI side.
//
// The CUDA handlers of cuda_ffi/cuda.cu (compiled for the CPU in cuda_emu.cc) are exported
// to XLA's CPU runtime through thin handlers (SplatjaxRender{Fwd,Bwd}CudaEmu). XLA calls
// those with a real call frame (arguments, results, attributes, execution stage); the
// bridge passes the same frame to the CUDA handler with two things replaced:
//   - the API table: Stream_Get returns an emulated stream, and DeviceMemory_Allocate /
//     DeviceMemory_Free follow XLA's GPU rules (xla/ffi/ffi_api.cc): the alignment must be
//     a power of two of at most 16 bytes ("Unsupported alignment: N" otherwise), size 0
//     gives a null pointer. Blocks are 16-byte aligned but deliberately not 32-byte
//     aligned, filled with the poison byte, and fenced by red zones that are checked when
//     the block is freed (a write out of bounds fails the call). Frees are stream-ordered:
//     the block is poisoned and released after the queued work ran. Context queries the
//     GPU handlers have no business making on this path (thread pools, execution state)
//     fail.
//   - the execution context: the emulator's, holding the stream.
// Around the call the bridge poisons every result buffer (device memory is uninitialised),
// registers all buffers as device memory for the runtime's range checks, runs the stream
// (the kernels) after the handler returned, checks that no input buffer was written and
// that no scratch block was leaked, and turns any emulator finding into an FFI error.
// Calls are serialised (one emulated device).
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "runtime.h"
#include "xla/ffi/api/c_api.h"

extern "C" XLA_FFI_Error* SplatjaxRenderFwdCuda(XLA_FFI_CallFrame* frame);
extern "C" XLA_FFI_Error* SplatjaxRenderBwdCuda(XLA_FFI_CallFrame* frame);

namespace sjemu {
namespace {

constexpr size_t kMaxAlignment = 16;  // XLA's limit for FFI scratch allocations
constexpr size_t kFront = 48, kBack = 64;  // red zones; base is 64-aligned, so data is 16 mod 32
constexpr unsigned char kRedZone = 0xFD;

}  // namespace

// ----------------------------------------------------------------------------- scratch memory
// XLA's rules for FFI scratch allocations (xla/ffi/ffi_api.cc): the alignment is a power of
// two of at most 16 bytes; size 0 gives null. Blocks are 16-byte but not 32-byte aligned,
// poisoned, and fenced by red zones.
void* scratch_allocate(size_t size, size_t alignment, int* code, std::string* err) {
  note_scratch(size, alignment);
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > kMaxAlignment) {
    *code = XLA_FFI_Error_Code_INVALID_ARGUMENT;
    *err = "Unsupported alignment: " + std::to_string(alignment);
    return nullptr;
  }
  if (injected("XLA_FFI_DeviceMemory_Allocate") != cudaSuccess) {
    *code = XLA_FFI_Error_Code_RESOURCE_EXHAUSTED;
    *err = "out of device memory (injected)";
    return nullptr;
  }
  if (size == 0) return nullptr;
  const size_t total = (kFront + size + kBack + 63) / 64 * 64;
  char* base = static_cast<char*>(std::aligned_alloc(64, total));
  if (!base) {
    *code = XLA_FFI_Error_Code_RESOURCE_EXHAUSTED;
    *err = "out of host memory";
    return nullptr;
  }
  char* data = base + kFront;
  std::memset(base, kRedZone, kFront);
  std::memset(data, poison_byte(), size);
  std::memset(data + size, kRedZone, total - kFront - size);
  add_region(data, size, "scratch block of " + std::to_string(size) + " bytes");
  return data;
}

// Stream-ordered, as XLA's allocator: the block goes back after the work queued before it;
// then its red zones are checked (a write out of bounds fails the call) and it is poisoned.
void scratch_free(CUstream_st* stream, void* ptr, size_t size) {
  char* data = static_cast<char*>(ptr);
  enqueue_always(stream, "scratch free", [data, size]() -> std::string {
    char* base = data - kFront;
    const size_t total = (kFront + size + kBack + 63) / 64 * 64;
    std::string err;
    for (size_t i = 0; i < kFront; ++i)
      if ((unsigned char)base[i] != kRedZone) {
        err = "a kernel wrote " + std::to_string(kFront - i) + " bytes before the start of a scratch block of " +
              std::to_string(size) + " bytes";
        break;
      }
    for (size_t i = kFront + size; err.empty() && i < total; ++i)
      if ((unsigned char)base[i] != kRedZone) {
        err = "a kernel wrote past the end of a scratch block of " + std::to_string(size) + " bytes (at +" +
              std::to_string(i - kFront) + ")";
      }
    remove_region(data);
    std::memset(data, poison_byte(), size);  // freed memory is poisoned
    std::free(base);
    return err;
  });
}

namespace {

struct EmuContext {
  const XLA_FFI_Api* real = nullptr;
  CUstream_st* stream = nullptr;
  int64_t live_blocks = 0;
};

std::mutex& call_mutex() {
  static std::mutex m;
  return m;
}

XLA_FFI_Error* make_error(const XLA_FFI_Api* api, XLA_FFI_Error_Code code, const std::string& msg) {
  XLA_FFI_Error_Create_Args args;
  args.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  args.extension_start = nullptr;
  args.message = msg.c_str();
  args.errc = code;
  return api->XLA_FFI_Error_Create(&args);
}

EmuContext* emu(XLA_FFI_ExecutionContext* ctx) { return reinterpret_cast<EmuContext*>(ctx); }

XLA_FFI_Error* emu_stream_get(XLA_FFI_Stream_Get_Args* args) {
  args->stream = emu(args->ctx)->stream;
  return nullptr;
}

XLA_FFI_Error* emu_allocate(XLA_FFI_DeviceMemory_Allocate_Args* args) {
  EmuContext* c = emu(args->ctx);
  int code = 0;
  std::string err;
  args->data = scratch_allocate(args->size, args->alignment, &code, &err);
  if (!err.empty()) return make_error(c->real, (XLA_FFI_Error_Code)code, err);
  if (args->data) ++c->live_blocks;
  return nullptr;
}

XLA_FFI_Error* emu_free(XLA_FFI_DeviceMemory_Free_Args* args) {
  EmuContext* c = emu(args->ctx);
  if (!args->data) return nullptr;
  --c->live_blocks;
  scratch_free(c->stream, args->data, args->size);
  return nullptr;
}
XLA_FFI_Error* emu_device_ordinal(XLA_FFI_DeviceOrdinal_Get_Args* args) {
  args->device_ordinal = 0;
  return nullptr;
}

template <class Args>
XLA_FFI_Error* emu_unavailable(Args* args) {
  return make_error(emu(args->ctx)->real, XLA_FFI_Error_Code_UNIMPLEMENTED,
                    "not available to a CUDA handler under the splatjax CUDA emulator");
}

// The API table the CUDA handler sees: XLA's own, with the context-dependent entries
// replaced. Built on first use from the table XLA passes in.
const XLA_FFI_Api* emu_api(const XLA_FFI_Api* real) {
  static XLA_FFI_Api api;
  static const XLA_FFI_Api* built_from = nullptr;
  if (built_from != real) {
    std::memset(&api, 0, sizeof(api));
    std::memcpy(&api, real, std::min(real->struct_size, sizeof(api)));
    api.struct_size = sizeof(api);
    api.internal_api = nullptr;
    api.XLA_FFI_Stream_Get = emu_stream_get;
    api.XLA_FFI_DeviceMemory_Allocate = emu_allocate;
    api.XLA_FFI_DeviceMemory_Free = emu_free;
    api.XLA_FFI_DeviceOrdinal_Get = emu_device_ordinal;
    api.XLA_FFI_ExecutionContext_Get = emu_unavailable<XLA_FFI_ExecutionContext_Get_Args>;
    api.XLA_FFI_State_Set = emu_unavailable<XLA_FFI_State_Set_Args>;
    api.XLA_FFI_State_Get = emu_unavailable<XLA_FFI_State_Get_Args>;
    api.XLA_FFI_ThreadPool_Schedule = emu_unavailable<XLA_FFI_ThreadPool_Schedule_Args>;
    api.XLA_FFI_ThreadPool_NumThreads = emu_unavailable<XLA_FFI_ThreadPool_NumThreads_Args>;
    api.XLA_FFI_RunId_Get = emu_unavailable<XLA_FFI_RunId_Get_Args>;
    built_from = real;
  }
  return &api;
}

size_t dtype_bytes(XLA_FFI_DataType t) {
  switch (t) {
    case XLA_FFI_DataType_PRED: case XLA_FFI_DataType_S8: case XLA_FFI_DataType_U8: return 1;
    case XLA_FFI_DataType_S16: case XLA_FFI_DataType_U16: case XLA_FFI_DataType_F16: case XLA_FFI_DataType_BF16: return 2;
    case XLA_FFI_DataType_S32: case XLA_FFI_DataType_U32: case XLA_FFI_DataType_F32: return 4;
    case XLA_FFI_DataType_S64: case XLA_FFI_DataType_U64: case XLA_FFI_DataType_F64: case XLA_FFI_DataType_C64: return 8;
    case XLA_FFI_DataType_C128: return 16;
    default: return 0;
  }
}

struct BufferView {
  void* data;
  size_t bytes;
};

BufferView view(void* p) {
  auto* b = static_cast<XLA_FFI_Buffer*>(p);
  size_t n = dtype_bytes(b->dtype);
  for (int64_t i = 0; i < b->rank; ++i) n *= (size_t)b->dims[i];
  return {b->data, n};
}

XLA_FFI_Error* run(XLA_FFI_Handler* handler, XLA_FFI_CallFrame* frame) {
  // metadata queries (API version, traits) go straight to the handler
  if (frame->extension_start != nullptr && frame->extension_start->type == XLA_FFI_Extension_Metadata)
    return handler(frame);
  std::lock_guard<std::mutex> lk(call_mutex());
  EmuContext ctx;
  ctx.real = frame->api;
  ctx.stream = new_stream();
  take_violations();  // a fresh call starts clean
  std::vector<BufferView> args, rets;
  std::vector<std::vector<char>> arg_copies;
  for (int64_t i = 0; i < frame->args.size; ++i) {
    if (frame->args.types[i] != XLA_FFI_ArgType_BUFFER) continue;
    BufferView v = view(frame->args.args[i]);
    args.push_back(v);
    add_region(v.data, v.bytes, "argument " + std::to_string(i));
    arg_copies.emplace_back(static_cast<char*>(v.data), static_cast<char*>(v.data) + (v.data ? v.bytes : 0));
  }
  for (int64_t i = 0; i < frame->rets.size; ++i) {
    if (frame->rets.types[i] != XLA_FFI_RetType_BUFFER) continue;
    BufferView v = view(frame->rets.rets[i]);
    rets.push_back(v);
    if (v.data) std::memset(v.data, poison_byte(), v.bytes);  // device memory starts uninitialised
    add_region(v.data, v.bytes, "result " + std::to_string(i));
  }
  XLA_FFI_CallFrame f = *frame;
  f.api = emu_api(frame->api);
  f.ctx = reinterpret_cast<XLA_FFI_ExecutionContext*>(&ctx);
  XLA_FFI_Error* err = handler(&f);
  // the device runs what the host queued
  std::string found = flush(ctx.stream);
  delete_stream(ctx.stream);
  if (ctx.live_blocks != 0 && found.empty())
    found = std::to_string(ctx.live_blocks) + " scratch blocks were not freed";
  for (size_t i = 0; i < args.size(); ++i)
    if (args[i].data && std::memcmp(args[i].data, arg_copies[i].data(), args[i].bytes) != 0 && found.empty())
      found = "input buffer " + std::to_string(i) + " was written";
  for (const auto& v : args) remove_region(v.data);
  for (const auto& v : rets) remove_region(v.data);
  const std::string rules = take_violations();
  if (!rules.empty()) found = found.empty() ? rules : found + "; " + rules;
  if (err) return err;  // the handler's own error comes first
  if (!found.empty()) return make_error(frame->api, XLA_FFI_Error_Code_INTERNAL, "CUDA emulator: " + found);
  return nullptr;
}

}  // namespace
}  // namespace sjemu

SJEMU_EXPORT XLA_FFI_Error* SplatjaxRenderFwdCudaEmu(XLA_FFI_CallFrame* frame) {
  return sjemu::run(SplatjaxRenderFwdCuda, frame);
}

SJEMU_EXPORT XLA_FFI_Error* SplatjaxRenderBwdCudaEmu(XLA_FFI_CallFrame* frame) {
  return sjemu::run(SplatjaxRenderBwdCuda, frame);
}

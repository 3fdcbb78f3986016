// splatjax CUDA-on-CPU emulation: cuda_ffi/cuda.cu itself, compiled for the CPU.
// The emulator's cuda_runtime.h and cub/cub.cuh (include/) come first on the include path;
// kernel launches (SJ_LAUNCH in cuda.cu, <<<...>>> under nvcc) go through sjemu::launch.
// SPLATJAX_CUDA_EMU_SOURCE (CMake) names the source: cuda.cu unless a test build of an older
// kernel points it elsewhere.
#define SJ_LAUNCH(kernel, grid, block, smem, stream) ::sjemu::launch(kernel, #kernel, grid, block, smem, stream)
#include SPLATJAX_CUDA_EMU_SOURCE

// splatjax CUDA-on-CPU emulation: stands in for the CUDA runtime header when cuda_ffi/cuda.cu
// is compiled by a host C++ compiler (see sjemu/emu.h).
#pragma once
#include "sjemu/emu.h"

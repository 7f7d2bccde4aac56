// The CUDA emulator (tests only): the runtime API is all in cuda_runtime.h.
#pragma once
#include <cuda_runtime.h>

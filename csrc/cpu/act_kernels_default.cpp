// The fused CPU passes for any x86/ARM CPU (Vectorized<T> falls back to its portable implementation).
#define CPU_CAPABILITY DEFAULT
#include "act_kernels.h"

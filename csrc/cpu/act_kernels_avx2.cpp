// The fused CPU passes compiled for AVX2 + FMA (Vectorized<float> becomes 8 lanes with Sleef's exp).
// setuptools compiles every source with one set of flags, so this file turns AVX2 on for itself with a
// target pragma and the feature macros the -mavx2 -mfma flags would define (sleef.h and ATen's vec headers
// key on them). Only called after a run-time check that the CPU has both (bvae_ops.cpp).
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx,avx2,fma,f16c")
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#else
#define CPU_CAPABILITY AVX2  // not x86: the portable code under the AVX2 name, never selected
#endif
#include "act_kernels.h"

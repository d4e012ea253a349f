// The CUDA backend's two fused passes (bias + G-NoVa, G-NoVa gradient + bias gradient): plain CUDA with
// raw pointers and cudaStream_t launchers, no torch/ATen headers, so `nvcc -c` checks them on any machine.
// csrc/cuda_ops.cpp binds tensors to these launchers. Semantics mirror csrc/cpu/act_kernels.h exactly.
//
// The per-element math is `__host__ __device__` and needs only <math.h>: define BVAE_ACT_MATH_ONLY before
// including this header to get just that part (tests/cuda_host_math_test.cpp compiles it with g++).
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define BVAE_HD __host__ __device__ __forceinline__
#else
#define BVAE_HD inline
#endif

namespace bvae {
namespace gpu {

// ---------------------------------------------------------------------------------------------------------
// Per-element math, in opmath acc_t (float for half/bfloat16/float, double for double).
// ---------------------------------------------------------------------------------------------------------

// a(u) = alpha * u + beta * sigmoid(gamma * u), with the constants pre-converted to acc_t the way the CPU
// kernels convert them (each double cast to acc_t; beta * gamma multiplied in double, then cast).
template <typename acc_t>
struct GnovaConsts {
  acc_t alpha;
  acc_t beta;
  acc_t neg_gamma;   // -gamma
  acc_t beta_gamma;  // beta * gamma
};

template <typename acc_t>
BVAE_HD GnovaConsts<acc_t> make_gnova_consts(double alpha, double beta, double gamma) {
  GnovaConsts<acc_t> k;
  k.alpha = static_cast<acc_t>(alpha);
  k.beta = static_cast<acc_t>(beta);
  k.neg_gamma = -static_cast<acc_t>(gamma);
  k.beta_gamma = static_cast<acc_t>(beta * gamma);
  return k;
}

// Precise exp (never the fast intrinsics): expf for float, exp for double.
BVAE_HD float gnova_exp(float x) { return expf(x); }
BVAE_HD double gnova_exp(double x) { return exp(x); }

// sigmoid(gamma * x) = 1 / (1 + exp(-gamma * x)): exp overflow gives 1 / inf = 0, never NaN.
template <typename acc_t>
BVAE_HD acc_t gnova_sigmoid(acc_t x, const GnovaConsts<acc_t>& k) {
  return acc_t(1) / (acc_t(1) + gnova_exp(k.neg_gamma * x));
}

// a(x). beta == 0 skips the sigmoid; alpha == 0 skips the linear term, so that sigmoid(-inf) is 0 and not
// 0 * -inf = NaN.
template <typename acc_t>
BVAE_HD acc_t gnova_value(acc_t x, const GnovaConsts<acc_t>& k) {
  acc_t out = acc_t(0);
  if (k.beta != acc_t(0)) out = k.beta * gnova_sigmoid(x, k);
  if (k.alpha != acc_t(0)) out = out + k.alpha * x;
  return out;
}

// a'(x) = alpha + beta * gamma * s * (1 - s), s = sigmoid(gamma * x); beta * gamma == 0 skips the sigmoid.
template <typename acc_t>
BVAE_HD acc_t gnova_derivative(acc_t x, const GnovaConsts<acc_t>& k) {
  acc_t d = k.alpha;
  if (k.beta_gamma != acc_t(0)) {
    const acc_t s = gnova_sigmoid(x, k);
    d = d + (k.beta_gamma * s) * (acc_t(1) - s);
  }
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// Index helpers shared by the launchers and the host test.
// ---------------------------------------------------------------------------------------------------------

BVAE_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Channel-inner bias-gradient reduction: rows are cut into fixed chunks (a function of the row count only,
// never of the device), each chunk gives one [C] partial sum, and the partials are summed in chunk order.
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kMaxChunks = 1024;

BVAE_HD int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = ceil_div(rows, kMaxChunks);
  return r > kMinRowsPerChunk ? r : kMinRowsPerChunk;
}

BVAE_HD int64_t num_chunks(int64_t rows) { return rows > 0 ? ceil_div(rows, rows_per_chunk(rows)) : 0; }

}  // namespace gpu
}  // namespace bvae

#ifndef BVAE_ACT_MATH_ONLY

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace bvae {
namespace gpu {

// How the dense buffer splits around its channel dimension (layout_of() in csrc/bvae_common.h).
//   kFlat:         no channel dimension (no bias / no bias gradient): `outer * channels * inner` elements.
//   kChannelOuter: [outer = N][channels][inner = H * W] (NCHW contiguous).
//   kChannelInner: [outer][channels] (NHWC, or [M, C]); `inner` must be 1.
enum class ActLayout : int { kFlat = 0, kChannelOuter = 1, kChannelInner = 2 };

struct ActShape {
  ActLayout layout;
  int64_t outer;
  int64_t channels;
  int64_t inner;
};

// scalar_t: float, double, __half, __nv_bfloat16 (explicitly instantiated in act_kernels.cu).
//
// u = u + bias (in place, rounded to scalar_t), y = a(u) from the rounded u. `bias` ([channels]) may be null:
// then u is only read, never written, and the layout is ignored (flat elementwise). A bias with kFlat, or
// kChannelInner with inner != 1, returns cudaErrorInvalidValue without launching.
template <typename scalar_t>
cudaError_t bias_act_launch(scalar_t* u, scalar_t* y, const scalar_t* bias, ActShape shape, double alpha,
                            double beta, double gamma, cudaStream_t stream);

// Bytes of device workspace act_backward_launch needs (0 unless a bias gradient is asked for).
template <typename scalar_t>
int64_t act_backward_workspace_bytes(ActShape shape, bool bias_grad);

// du = grad * a'(u). If `db` is non-null: db[c] = sum of du (as stored) over all but the channel dim,
// reduced in a fixed order (deterministic, no atomics) through `workspace` (act_backward_workspace_bytes).
// With db == nullptr the pass is flat elementwise and the layout is ignored. A db with kFlat, or a missing
// workspace, returns cudaErrorInvalidValue without launching.
template <typename scalar_t>
cudaError_t act_backward_launch(const scalar_t* grad, const scalar_t* u, scalar_t* du, scalar_t* db,
                                void* workspace, ActShape shape, double alpha, double beta, double gamma,
                                cudaStream_t stream);

}  // namespace gpu
}  // namespace bvae

#endif  // BVAE_ACT_MATH_ONLY

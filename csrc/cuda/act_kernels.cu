// The CUDA backend's fused passes; see act_kernels.cuh. Mirrors csrc/cpu/act_kernels.h:
//   bias_act:     u = round(z + bias) in place, y = round(a(u)) from the rounded u, in opmath.
//   act_backward: du = round(g * a'(u)); db[c] = sum of the rounded du over all but the channel dim.
// The bias gradient is deterministic: every partial sum is owned by one fixed group of threads that adds in
// a fixed order (shuffle trees, then a serial sum over partials), so results do not depend on the grid size,
// the device or the run. No atomics.
//
// Conversions use the explicit intrinsics (__half2float, __float2half_rn, ...) so the file builds with
// PyTorch's -D__CUDA_NO_HALF_CONVERSIONS__ / -D__CUDA_NO_BFLOAT16_CONVERSIONS__ flags as well as without.
#include "act_kernels.cuh"

#include <cstdint>

namespace bvae {
namespace gpu {
namespace {

constexpr int kThreads = 256;          // threads per block of every kernel
constexpr int kWarp = 32;
constexpr int kBlockRowMinLen = 1024;  // channel-outer rows at least this long get a whole block, else a warp
constexpr int kColTile = 32;           // channel-inner reduction: channels per block (threadIdx.x) ...
constexpr int kColRows = kThreads / kColTile;  // ... and row lanes per block (threadIdx.y)

// ----- opmath type and conversions -----

template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<__half> {
  using type = float;
};
template <>
struct OpMath<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using acc_type = typename OpMath<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_type<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_acc<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ----- 16-byte packs -----

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // 4 float, 2 double, 8 half/bfloat16

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& x) {
  *reinterpret_cast<Pack<T, N>*>(p) = x;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ----- reductions (fixed trees: deterministic) -----

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;  // the full sum is in lane 0
}

// Sum over a 1D block of kThreads threads; the result is valid in thread 0. Ends with a barrier, so `smem`
// may be reused right after. Every thread of the block must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* smem) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  acc_t total = acc_t(0);
  if (warp == 0) {
    total = lane < kThreads / kWarp ? smem[lane] : acc_t(0);
    total = warp_sum(total);
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ----- bias + activation -----

// (e / inner) % channels and e % channels, in 32-bit arithmetic when every index fits (`narrow`): 64-bit
// integer division costs several times more instructions than 32-bit.
__device__ __forceinline__ int64_t outer_channel(int64_t e, int64_t inner, int64_t channels, bool narrow) {
  if (narrow) {
    return static_cast<int64_t>((static_cast<uint32_t>(e) / static_cast<uint32_t>(inner)) %
                                static_cast<uint32_t>(channels));
  }
  return (e / inner) % channels;
}

__device__ __forceinline__ int64_t inner_channel(int64_t e, int64_t channels, bool narrow) {
  if (narrow) return static_cast<int64_t>(static_cast<uint32_t>(e) % static_cast<uint32_t>(channels));
  return e % channels;
}

enum class BiasMode { kNone, kOuter, kInner };

// One thread handles VEC consecutive elements per step. kOuter with VEC > 1 needs inner % VEC == 0 (a pack
// lies in one (n, c) row, one channel); kInner with VEC > 1 needs channels % VEC == 0 (a pack covers channels
// c0 .. c0 + VEC - 1 of one row). Both need 16-byte aligned u and y. Elements from n_vec * VEC to total
// (kNone only) are done one at a time.
template <typename scalar_t, int VEC, BiasMode MODE>
__global__ void __launch_bounds__(kThreads)
    bias_act_kernel(scalar_t* __restrict__ u, scalar_t* __restrict__ y, const scalar_t* __restrict__ bias,
                    int64_t n_vec, int64_t total, int64_t channels, int64_t inner, GnovaConsts<acc_type<scalar_t>> k) {
  using acc_t = acc_type<scalar_t>;
  const int64_t stride = grid_threads();
  const bool narrow = total <= static_cast<int64_t>(UINT32_MAX);
  for (int64_t vi = global_thread(); vi < n_vec; vi += stride) {
    const int64_t e = vi * VEC;
    Pack<scalar_t, VEC> up = load_pack<scalar_t, VEC>(u + e);
    Pack<scalar_t, VEC> yp;
    acc_t b_outer = acc_t(0);
    int64_t c0 = 0;
    if constexpr (MODE == BiasMode::kOuter) b_outer = to_acc(bias[outer_channel(e, inner, channels, narrow)]);
    if constexpr (MODE == BiasMode::kInner) c0 = inner_channel(e, channels, narrow);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      if constexpr (MODE == BiasMode::kOuter) up.v[j] = from_acc<scalar_t>(to_acc(up.v[j]) + b_outer);
      if constexpr (MODE == BiasMode::kInner) up.v[j] = from_acc<scalar_t>(to_acc(up.v[j]) + to_acc(bias[c0 + j]));
      yp.v[j] = from_acc<scalar_t>(gnova_value<acc_t>(to_acc(up.v[j]), k));
    }
    if constexpr (MODE != BiasMode::kNone) store_pack<scalar_t, VEC>(u + e, up);
    store_pack<scalar_t, VEC>(y + e, yp);
  }
  if constexpr (MODE == BiasMode::kNone) {
    for (int64_t e = n_vec * VEC + global_thread(); e < total; e += stride) {
      y[e] = from_acc<scalar_t>(gnova_value<acc_t>(to_acc(u[e]), k));
    }
  }
}

int sm_count(cudaError_t* err) {
  int device = 0;
  int count = 0;
  *err = cudaGetDevice(&device);
  if (*err == cudaSuccess) *err = cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
  return count > 0 ? count : 1;
}

// Blocks for a grid-stride loop over `work` items handled `per_block` at a time: enough for about 16
// resident blocks per SM, never more than needed.
int64_t grid_for(int64_t work, int64_t per_block, int sms) {
  const int64_t needed = ceil_div(work, per_block);
  const int64_t cap = static_cast<int64_t>(sms) * 16;
  const int64_t blocks = needed < cap ? needed : cap;
  return blocks > 0 ? blocks : 1;
}

template <typename scalar_t, int VEC, BiasMode MODE>
cudaError_t launch_bias_act_kernel(scalar_t* u, scalar_t* y, const scalar_t* bias, int64_t total,
                                   int64_t channels, int64_t inner, GnovaConsts<acc_type<scalar_t>> k, int sms,
                                   cudaStream_t stream) {
  const int64_t n_vec = total / VEC;
  const int64_t work = n_vec > 0 ? n_vec : total;  // total < VEC: the tail loop does everything
  bias_act_kernel<scalar_t, VEC, MODE><<<static_cast<unsigned>(grid_for(work, kThreads, sms)), kThreads, 0, stream>>>(
      u, y, bias, n_vec, total, channels, inner, k);
  return cudaGetLastError();
}

// Physically, [N][C][1] is [N][C]: channel-outer rows of length 1 are better served by the channel-inner path.
ActShape normalized(ActShape s) {
  if (s.layout == ActLayout::kChannelOuter && s.inner == 1) {
    s.layout = ActLayout::kChannelInner;
  }
  return s;
}

// ----- activation gradient (+ bias gradient) -----

// du = g * a'(u), flat elementwise; VEC > 1 needs 16-byte aligned g, u and du.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    act_grad_flat_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u, scalar_t* __restrict__ du,
                         int64_t n_vec, int64_t total, GnovaConsts<acc_type<scalar_t>> k) {
  using acc_t = acc_type<scalar_t>;
  const int64_t stride = grid_threads();
  for (int64_t vi = global_thread(); vi < n_vec; vi += stride) {
    const int64_t e = vi * VEC;
    const Pack<scalar_t, VEC> gp = load_pack<scalar_t, VEC>(g + e);
    const Pack<scalar_t, VEC> up = load_pack<scalar_t, VEC>(u + e);
    Pack<scalar_t, VEC> dp;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      dp.v[j] = from_acc<scalar_t>(to_acc(gp.v[j]) * gnova_derivative<acc_t>(to_acc(up.v[j]), k));
    }
    store_pack<scalar_t, VEC>(du + e, dp);
  }
  for (int64_t e = n_vec * VEC + global_thread(); e < total; e += stride) {
    du[e] = from_acc<scalar_t>(to_acc(g[e]) * gnova_derivative<acc_t>(to_acc(u[e]), k));
  }
}

// One element of the backward pass: stores du[e] and returns the stored (rounded) value in opmath.
template <typename scalar_t>
__device__ __forceinline__ acc_type<scalar_t> act_grad_one(const scalar_t* __restrict__ g,
                                                            const scalar_t* __restrict__ u,
                                                            scalar_t* __restrict__ du, int64_t e,
                                                            const GnovaConsts<acc_type<scalar_t>>& k) {
  const scalar_t d = from_acc<scalar_t>(to_acc(g[e]) * gnova_derivative<acc_type<scalar_t>>(to_acc(u[e]), k));
  du[e] = d;
  return to_acc(d);
}

// Channel-outer, long rows: block b owns rows b, b + gridDim.x, ...; row_sums[row] = sum of the row's du.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    act_grad_rows_block_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u,
                               scalar_t* __restrict__ du, acc_type<scalar_t>* __restrict__ row_sums, int64_t rows,
                               int64_t len, GnovaConsts<acc_type<scalar_t>> k) {
  using acc_t = acc_type<scalar_t>;
  __shared__ acc_t smem[kThreads / kWarp];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {  // block-uniform: the barriers are safe
    const int64_t base = row * len;
    acc_t acc = acc_t(0);
    for (int64_t i = threadIdx.x; i < len; i += kThreads) acc += act_grad_one<scalar_t>(g, u, du, base + i, k);
    acc = block_sum<acc_t>(acc, smem);
    if (threadIdx.x == 0) row_sums[row] = acc;
  }
}

// Channel-outer, short rows: warp w owns rows w, w + (warps in grid), ...
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    act_grad_rows_warp_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u,
                              scalar_t* __restrict__ du, acc_type<scalar_t>* __restrict__ row_sums, int64_t rows,
                              int64_t len, GnovaConsts<acc_type<scalar_t>> k) {
  using acc_t = acc_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t n_warps = grid_threads() / kWarp;
  for (int64_t row = global_thread() / kWarp; row < rows; row += n_warps) {  // warp-uniform: shuffles are safe
    const int64_t base = row * len;
    acc_t acc = acc_t(0);
    for (int64_t i = lane; i < len; i += kWarp) acc += act_grad_one<scalar_t>(g, u, du, base + i, k);
    acc = warp_sum(acc);
    if (lane == 0) row_sums[row] = acc;
  }
}

// Channel-inner: block (x, y) owns channels [x * kColTile, +kColTile) of the chunks y, y + gridDim.y, ...;
// thread (tx, ty) adds rows r0 + ty, r0 + ty + kColRows, ... of channel c, then the kColRows lane sums of each
// channel are added in ty order into partial[chunk][c].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    act_grad_cols_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u, scalar_t* __restrict__ du,
                         acc_type<scalar_t>* __restrict__ partial, int64_t rows, int64_t channels,
                         int64_t chunk_rows, int64_t n_chunks, GnovaConsts<acc_type<scalar_t>> k) {
  using acc_t = acc_type<scalar_t>;
  __shared__ acc_t smem[kColRows][kColTile + 1];
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColTile + tx;
  for (int64_t chunk = blockIdx.y; chunk < n_chunks; chunk += gridDim.y) {  // block-uniform
    const int64_t r0 = chunk * chunk_rows;
    const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    acc_t acc = acc_t(0);
    if (c < channels) {
      for (int64_t r = r0 + ty; r < r1; r += kColRows) acc += act_grad_one<scalar_t>(g, u, du, r * channels + c, k);
    }
    smem[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && c < channels) {
      acc_t s = acc_t(0);
#pragma unroll
      for (int j = 0; j < kColRows; ++j) s += smem[j][tx];
      partial[chunk * channels + c] = s;
    }
    __syncthreads();
  }
}

// db[c] = sum over p in order 0 .. n_parts - 1 of partial[p][c].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const acc_type<scalar_t>* __restrict__ partial, scalar_t* __restrict__ db, int64_t n_parts,
                        int64_t channels) {
  using acc_t = acc_type<scalar_t>;
  for (int64_t c = global_thread(); c < channels; c += grid_threads()) {
    acc_t s = acc_t(0);
    for (int64_t p = 0; p < n_parts; ++p) s += partial[p * channels + c];
    db[c] = from_acc<scalar_t>(s);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------------------

template <typename scalar_t>
cudaError_t bias_act_launch(scalar_t* u, scalar_t* y, const scalar_t* bias, ActShape shape, double alpha,
                            double beta, double gamma, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  constexpr int V = kVec<scalar_t>;
  const ActShape s = normalized(shape);
  const int64_t total = s.outer * s.channels * s.inner;
  if (total <= 0) return cudaSuccess;
  cudaError_t err;
  const int sms = sm_count(&err);
  if (err != cudaSuccess) return err;
  const auto k = make_gnova_consts<acc_t>(alpha, beta, gamma);
  const bool vec_ok = aligned16(u) && aligned16(y);
  if (bias != nullptr && s.layout == ActLayout::kFlat) return cudaErrorInvalidValue;  // a bias needs channels
  if (bias == nullptr) {
    if (vec_ok) return launch_bias_act_kernel<scalar_t, V, BiasMode::kNone>(u, y, nullptr, total, 1, 1, k, sms, stream);
    return launch_bias_act_kernel<scalar_t, 1, BiasMode::kNone>(u, y, nullptr, total, 1, 1, k, sms, stream);
  }
  if (s.layout == ActLayout::kChannelOuter) {
    if (vec_ok && s.inner % V == 0) {
      return launch_bias_act_kernel<scalar_t, V, BiasMode::kOuter>(u, y, bias, total, s.channels, s.inner, k, sms,
                                                                   stream);
    }
    return launch_bias_act_kernel<scalar_t, 1, BiasMode::kOuter>(u, y, bias, total, s.channels, s.inner, k, sms,
                                                                 stream);
  }
  if (s.inner != 1) return cudaErrorInvalidValue;  // kChannelInner is [outer][C]
  if (vec_ok && s.channels % V == 0) {
    return launch_bias_act_kernel<scalar_t, V, BiasMode::kInner>(u, y, bias, total, s.channels, 1, k, sms, stream);
  }
  return launch_bias_act_kernel<scalar_t, 1, BiasMode::kInner>(u, y, bias, total, s.channels, 1, k, sms, stream);
}

template <typename scalar_t>
int64_t act_backward_workspace_bytes(ActShape shape, bool bias_grad) {
  const ActShape s = normalized(shape);
  if (!bias_grad || s.layout == ActLayout::kFlat) return 0;
  const int64_t parts = s.layout == ActLayout::kChannelOuter ? s.outer : num_chunks(s.outer);
  return parts * s.channels * static_cast<int64_t>(sizeof(acc_type<scalar_t>));
}

template <typename scalar_t>
cudaError_t act_backward_launch(const scalar_t* grad, const scalar_t* u, scalar_t* du, scalar_t* db,
                                void* workspace, ActShape shape, double alpha, double beta, double gamma,
                                cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  constexpr int V = kVec<scalar_t>;
  const ActShape s = normalized(shape);
  const int64_t total = s.outer * s.channels * s.inner;
  if (total <= 0) return cudaSuccess;
  cudaError_t err;
  const int sms = sm_count(&err);
  if (err != cudaSuccess) return err;
  const auto k = make_gnova_consts<acc_t>(alpha, beta, gamma);

  if (db != nullptr && s.layout == ActLayout::kFlat) return cudaErrorInvalidValue;  // db needs channels
  if (db == nullptr) {
    if (aligned16(grad) && aligned16(u) && aligned16(du)) {
      const int64_t n_vec = total / V;
      act_grad_flat_kernel<scalar_t, V>
          <<<static_cast<unsigned>(grid_for(n_vec > 0 ? n_vec : total, kThreads, sms)), kThreads, 0, stream>>>(
              grad, u, du, n_vec, total, k);
    } else {
      act_grad_flat_kernel<scalar_t, 1>
          <<<static_cast<unsigned>(grid_for(total, kThreads, sms)), kThreads, 0, stream>>>(grad, u, du, total, total,
                                                                                           k);
    }
    return cudaGetLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  acc_t* partial = static_cast<acc_t*>(workspace);
  int64_t n_parts = 0;

  if (s.layout == ActLayout::kChannelOuter) {
    // partial = row_sums[n][c], one per (n, c) row of length inner.
    const int64_t rows = s.outer * s.channels;
    if (s.inner >= kBlockRowMinLen) {
      act_grad_rows_block_kernel<scalar_t><<<static_cast<unsigned>(grid_for(rows, 1, sms)), kThreads, 0, stream>>>(
          grad, u, du, partial, rows, s.inner, k);
    } else {
      act_grad_rows_warp_kernel<scalar_t>
          <<<static_cast<unsigned>(grid_for(rows, kThreads / kWarp, sms)), kThreads, 0, stream>>>(grad, u, du, partial,
                                                                                                  rows, s.inner, k);
    }
    n_parts = s.outer;
  } else {
    if (s.inner != 1) return cudaErrorInvalidValue;  // kChannelInner is [outer][C]
    const int64_t rows = s.outer;
    const int64_t chunk_rows = rows_per_chunk(rows);
    n_parts = num_chunks(rows);
    const int64_t tiles = ceil_div(s.channels, kColTile);
    if (tiles > 0x7fffffff) return cudaErrorInvalidValue;
    const int64_t grid_y = n_parts < 65535 ? n_parts : 65535;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(grid_y));
    const dim3 block(kColTile, kColRows);
    act_grad_cols_kernel<scalar_t><<<grid, block, 0, stream>>>(grad, u, du, partial, rows, s.channels, chunk_rows,
                                                               n_parts, k);
  }
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  sum_partials_kernel<scalar_t><<<static_cast<unsigned>(grid_for(s.channels, kThreads, sms)), kThreads, 0, stream>>>(
      partial, db, n_parts, s.channels);
  return cudaGetLastError();
}

#define BVAE_INSTANTIATE(T)                                                                                     \
  template cudaError_t bias_act_launch<T>(T*, T*, const T*, ActShape, double, double, double, cudaStream_t);    \
  template int64_t act_backward_workspace_bytes<T>(ActShape, bool);                                             \
  template cudaError_t act_backward_launch<T>(const T*, const T*, T*, T*, void*, ActShape, double, double, double, \
                                              cudaStream_t);

BVAE_INSTANTIATE(float)
BVAE_INSTANTIATE(double)
BVAE_INSTANTIATE(__half)
BVAE_INSTANTIATE(__nv_bfloat16)

#undef BVAE_INSTANTIATE

}  // namespace gpu
}  // namespace bvae

// A host emulation of the little of CUDA that csrc/cuda/act_kernels.cu uses, so that its kernels' index math runs
// on a machine without a GPU (tests/test_cuda_sources.py::test_cuda_kernels_run_in_host_emulation). A launch
// `kernel<<<grid, block, smem, stream>>>(args)` is rewritten by the test to `::bvae_emu::Launch(grid, block, smem,
// stream).go(kernel, args)`: one std::thread per thread of a block, the blocks in turn (so `__shared__`, which
// becomes `static`, is the running block's), __syncthreads a barrier of the block, __shfl_down_sync an exchange
// through a barrier of the warp. Semantics only, no speed; float and double are exact, __half and __nv_bfloat16
// round to nearest even.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_emu* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = 2;  // two SMs: grid_for() caps grids at 32 blocks, so grid-stride loops take several turns
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

// ----- half and bfloat16: 16-bit storage, round to nearest even -----
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};

inline float bvae_emu_bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t bvae_emu_float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __bfloat162float(__nv_bfloat16 b) { return bvae_emu_bits_to_float(uint32_t(b.x) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = bvae_emu_float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}
inline float __half2float(__half h) {
  const uint32_t sign = uint32_t(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
  float f;
  if (e == 0) {
    f = std::ldexp(float(m), -24);
  } else if (e == 31) {
    f = bvae_emu_bits_to_float(0x7f800000u | (m << 13));
  } else {
    f = bvae_emu_bits_to_float(((e + 112u) << 23) | (m << 13));
  }
  return bvae_emu_bits_to_float(bvae_emu_float_to_bits(f) | sign);
}
inline __half __float2half_rn(float f) {
  const uint32_t x = bvae_emu_float_to_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return {uint16_t(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (ax >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};  // rounds to infinity
  if (ax < 0x38800000u) {  // below the smallest normal: multiples of 2^-24
    return {uint16_t(sign | uint32_t(std::nearbyint(bvae_emu_bits_to_float(ax) * 16777216.0f)))};
  }
  return {uint16_t(sign | ((ax + 0xfffu + ((ax >> 13) & 1u) - (112u << 23)) >> 13))};
}

namespace bvae_emu {

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen != gen_; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  long gen_ = 0;
};

struct Warp {
  Barrier bar{32};
  double vals[32];
};

struct Block {
  explicit Block(int threads) : bar(threads), warps(new Warp[(threads + 31) / 32]) {}
  Barrier bar;
  std::unique_ptr<Warp[]> warps;
};

inline thread_local dim3 t_thread, t_block_idx, t_block_dim, t_grid_dim;
inline thread_local Block* t_block = nullptr;
inline thread_local int t_linear = 0;

struct Launch {
  dim3 grid, block;
  Launch(dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) : grid(g), block(b) {}
  template <typename Kernel, typename... Args>
  void go(Kernel kernel, Args... args) {
    const int threads = int(block.x * block.y * block.z);
    Block ctx(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        t_block = &ctx;
        t_linear = t;
        t_block_dim = block;
        t_grid_dim = grid;
        t_thread = dim3(unsigned(t) % block.x, unsigned(t) / block.x % block.y, unsigned(t) / (block.x * block.y));
        for (unsigned bz = 0; bz < grid.z; ++bz)
          for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
              t_block_idx = dim3(bx, by, bz);
              kernel(args...);
              ctx.bar.wait();  // the block is done before the next one reuses the `static` shared memory
            }
      });
    }
    for (auto& th : pool) th.join();
  }
};

}  // namespace bvae_emu

#define threadIdx (::bvae_emu::t_thread)
#define blockIdx (::bvae_emu::t_block_idx)
#define blockDim (::bvae_emu::t_block_dim)
#define gridDim (::bvae_emu::t_grid_dim)

inline void __syncthreads() { ::bvae_emu::t_block->bar.wait(); }

template <typename T>
T __shfl_down_sync(unsigned, T v, int offset) {
  ::bvae_emu::Warp& w = ::bvae_emu::t_block->warps[::bvae_emu::t_linear / 32];
  const int lane = ::bvae_emu::t_linear % 32;
  w.vals[lane] = double(v);
  w.bar.wait();
  const T r = lane + offset < 32 ? T(w.vals[lane + offset]) : v;
  w.bar.wait();
  return r;
}

// CUDA implementations of the bvae ops (schemas in bvae_ops.cpp). Compiled only in CUDA builds
// (setup.py defines BVAE_WITH_CUDA=1).
//
// The contraction is ATen's (cuDNN / cuBLAS); around it, the two fused passes of csrc/cuda/act_kernels.cu:
// bias + activation after the forward contraction, activation-gradient + bias-gradient before the backward
// contractions. The composites in bvae.h are shared with the CPU backend; this file supplies the two CUDA
// primitives (tensors -> raw-pointer launchers on the current stream) and registers every op.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bvae.h"
#include "cuda/act_kernels.cuh"

namespace bvae {
namespace {

// at:: scalar types -> the CUDA types the kernels are instantiated for (same size and bit layout).
template <typename T>
struct CudaScalar {
  using type = T;
};
template <>
struct CudaScalar<at::Half> {
  using type = __half;
};
template <>
struct CudaScalar<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename scalar_t>
typename CudaScalar<scalar_t>::type* cuda_ptr(const at::Tensor& t) {
  static_assert(sizeof(typename CudaScalar<scalar_t>::type) == sizeof(scalar_t), "bvae: scalar size mismatch");
  return reinterpret_cast<typename CudaScalar<scalar_t>::type*>(t.data_ptr<scalar_t>());
}

// Dense tensors of one shape whose elements sit in the same memory order (strides of size-1 dims don't matter),
// so the kernels may walk them with one flat index.
bool same_memory_order(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "bvae (cuda backend): ", name, " must be a CUDA tensor, got device ", t.device());
}

gpu::ActShape shape_of(const LayoutView& view) {
  return {view.layout == ChannelLayout::kChannelOuter ? gpu::ActLayout::kChannelOuter : gpu::ActLayout::kChannelInner,
          view.outer, view.channels, view.inner};
}

// The reverse scale e^s is applied with ATen ops on the stream (no host sync): this backend is the fallback
// behind Triton, and one extra elementwise pass keeps the CUDA kernels unchanged.
Tensor scale_tensor(const Tensor& log_scale) { return log_scale.exp().reshape({}); }

std::tuple<Tensor, Tensor> bias_act_cuda(Tensor z, const BiasActArgs& args) {
  check_cuda(z, "z");
  const c10::cuda::CUDAGuard guard(z.device());
  z = to_kernel_layout(z);
  if (args.log_scale.has_value() && args.log_scale->defined()) {
    TORCH_CHECK(args.in_place, "bvae: internal error: a scale needs an owned input");
    z.mul_(scale_tensor(*args.log_scale));
  }
  // y is always a new tensor: the kernels take u and y as __restrict__ pointers.
  auto y = at::empty_like(z);
  if (z.numel() == 0) return {y, args.keep_u ? z : Tensor()};
  const auto view = layout_of(z);
  Tensor b;
  if (args.bias.has_value() && args.bias->defined()) {
    TORCH_CHECK(args.in_place, "bvae: internal error: a bias needs an owned input");
    check_cuda(*args.bias, "bias");
    b = args.bias->contiguous();
  }
  TORCH_CHECK(same_memory_order(y, z), "bvae: internal error: y and u memory orders differ");
  const gpu::ActShape shape = b.defined() ? shape_of(view) : gpu::ActShape{gpu::ActLayout::kFlat, z.numel(), 1, 1};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(z.device().index()).stream();
  const ActParams act = args.act;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "bvae_bias_act_cuda", [&] {
    C10_CUDA_CHECK(gpu::bias_act_launch(cuda_ptr<scalar_t>(z), cuda_ptr<scalar_t>(y),
                                        b.defined() ? cuda_ptr<scalar_t>(b) : nullptr, shape, act.alpha, act.beta,
                                        act.gamma, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, args.keep_u ? z : Tensor()};
}

std::tuple<Tensor, Tensor> act_backward_cuda(const Tensor& grad, const OptTensor& u_in, ActParams act,
                                             const OptTensor& log_scale, bool bias_grad) {
  check_cuda(grad, "grad");
  const bool constant = act.constant_slope();
  TORCH_CHECK(constant || (u_in.has_value() && u_in->defined()), "bvae: internal error: u is missing");
  // Without u (a constant slope) the kernels never read u's values: grad stands in for it.
  const Tensor u = constant ? to_kernel_layout(grad) : to_kernel_layout(*u_in);
  check_cuda(u, "u");
  const c10::cuda::CUDAGuard guard(u.device());
  auto g = constant ? u : grad.contiguous(memory_format_of(u));
  if (u.dim() == 2 && !g.is_contiguous()) g = g.contiguous();
  auto du = at::empty_like(u);
  TORCH_CHECK(same_memory_order(g, u) && same_memory_order(du, u),
              "bvae: internal error: grad, u and du memory orders differ");
  const auto view = layout_of(u);
  Tensor db;
  if (bias_grad) db = at::empty({view.channels}, u.options());
  if (u.numel() == 0) {
    if (bias_grad) db.zero_();
    return {du, db};
  }
  const gpu::ActShape shape = bias_grad ? shape_of(view) : gpu::ActShape{gpu::ActLayout::kFlat, u.numel(), 1, 1};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, u.scalar_type(), "bvae_act_backward_cuda", [&] {
    using cuda_t = typename CudaScalar<scalar_t>::type;
    const int64_t ws_bytes = gpu::act_backward_workspace_bytes<cuda_t>(shape, bias_grad);
    // Stream-ordered through the caching allocator: freed (for reuse on this stream) when `ws` goes out of scope.
    at::Tensor ws = at::empty({ws_bytes}, u.options().dtype(at::kByte));
    C10_CUDA_CHECK(gpu::act_backward_launch(cuda_ptr<scalar_t>(g), cuda_ptr<scalar_t>(u), cuda_ptr<scalar_t>(du),
                                            bias_grad ? cuda_ptr<scalar_t>(db) : nullptr,
                                            ws_bytes > 0 ? ws.data_ptr() : nullptr, shape, act.alpha, act.beta,
                                            act.gamma, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (log_scale.has_value() && log_scale->defined()) du.mul_(scale_tensor(*log_scale));
  return {du, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(bvae, CUDA, m) { DeviceOps<bias_act_cuda, act_backward_cuda>::register_all(m); }

}  // namespace bvae

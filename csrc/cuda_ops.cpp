// CUDA implementations of the bvae ops (schemas in bvae_ops.cpp). Compiled only in CUDA builds
// (setup.py defines BVAE_WITH_CUDA=1).
//
// The contraction is ATen's (cuDNN / cuBLAS); around it, the two fused passes of csrc/cuda/act_kernels.cu:
// bias + activation after the forward contraction, activation-gradient + bias-gradient before the backward
// contractions. The composites in bvae_common.h are shared with the CPU backend; this file supplies the two
// CUDA primitives (tensors -> raw-pointer launchers on the current stream) and registers every op.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bvae_common.h"
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

std::tuple<at::Tensor, at::Tensor> bias_act_cuda(at::Tensor z, const c10::optional<at::Tensor>& bias,
                                                 ActParams act) {
  check_cuda(z, "z");
  check_float(z, "z");
  const c10::cuda::CUDAGuard guard(z.device());
  z = to_kernel_layout(z);
  auto y = at::empty_like(z);
  if (z.numel() == 0) return {y, z};
  const auto view = layout_of(z);
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == view.channels, "bvae: bias must have shape [",
                view.channels, "], got ", bias->sizes());
    TORCH_CHECK(bias->device() == z.device(), "bvae: bias must be on ", z.device(), ", got ", bias->device());
    b = bias->to(z.scalar_type()).contiguous();
  }
  TORCH_CHECK(same_memory_order(y, z), "bvae: internal error: y and u memory orders differ");
  const gpu::ActShape shape = b.defined() ? shape_of(view) : gpu::ActShape{gpu::ActLayout::kFlat, z.numel(), 1, 1};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(z.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "bvae_bias_act_cuda", [&] {
    C10_CUDA_CHECK(gpu::bias_act_launch(cuda_ptr<scalar_t>(z), cuda_ptr<scalar_t>(y),
                                        b.defined() ? cuda_ptr<scalar_t>(b) : nullptr, shape, act.alpha, act.beta,
                                        act.gamma, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, z};
}

std::tuple<at::Tensor, at::Tensor> act_backward_cuda(const at::Tensor& grad, const at::Tensor& u_in, ActParams act,
                                                     bool bias_grad) {
  check_cuda(u_in, "u");
  check_cuda(grad, "grad");
  check_float(u_in, "u");
  TORCH_CHECK(grad.device() == u_in.device(), "bvae: grad and u must be on one device, got ", grad.device(),
              " and ", u_in.device());
  const c10::cuda::CUDAGuard guard(u_in.device());
  auto u = to_kernel_layout(u_in);
  TORCH_CHECK(grad.sizes() == u.sizes(), "bvae: grad_output has shape ", grad.sizes(), ", expected ", u.sizes());
  auto g = grad.to(u.scalar_type()).contiguous(memory_format_of(u));
  if (u.dim() == 2 && !g.is_contiguous()) g = g.contiguous();
  auto du = at::empty_like(u);
  TORCH_CHECK(same_memory_order(g, u) && same_memory_order(du, u),
              "bvae: internal error: grad, u and du memory orders differ");
  const auto view = layout_of(u);
  at::Tensor db;
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
  return {du, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(bvae, CUDA, m) {
  m.impl("gnova", &gnova_impl<bias_act_cuda>);
  m.impl("gnova_backward", &gnova_backward_impl<act_backward_cuda>);
  m.impl("bi_conv2d", &bi_conv2d_impl<bias_act_cuda>);
  m.impl("bi_conv2d_backward", &bi_conv2d_backward_impl<act_backward_cuda>);
  m.impl("bi_conv2d_reverse", &bi_conv2d_reverse_impl<bias_act_cuda>);
  m.impl("bi_conv2d_reverse_backward", &bi_conv2d_reverse_backward_impl<act_backward_cuda>);
  m.impl("bi_linear", &bi_linear_impl<bias_act_cuda>);
  m.impl("bi_linear_backward", &bi_linear_backward_impl<act_backward_cuda>);
  m.impl("bi_linear_reverse", &bi_linear_reverse_impl<bias_act_cuda>);
  m.impl("bi_linear_reverse_backward", &bi_linear_reverse_backward_impl<act_backward_cuda>);
}

}  // namespace bvae

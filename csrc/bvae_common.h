// Shared by the CPU and CUDA registrations: the layout helper and the device-generic composites.
//
// A bidirectional layer's contraction is ATen's (oneDNN / cuDNN / BLAS); what we add around it is one
// fused pass for bias + activation (forward) and one for activation-gradient + bias-gradient (backward).
// Each device supplies those two primitives; the composites below are written once.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

namespace bvae {

// a(u) = alpha * u + beta * sigmoid(gamma * u).  sigmoid: (0, 1, 1).  identity: (1, 0, 1).
struct ActParams {
  double alpha;
  double beta;
  double gamma;
};

// How a dense 2D/4D tensor's memory splits around its channel dimension.
// kChannelOuter: [outer=N][C][inner=H*W] (NCHW contiguous); kChannelInner: [outer][C] (NHWC, or [M, C]).
enum class ChannelLayout { kChannelOuter, kChannelInner };

struct LayoutView {
  ChannelLayout layout;
  int64_t outer;
  int64_t channels;
  int64_t inner;
};

// Makes `t` dense in a layout the fused kernels understand (a no-op for contiguous NCHW, NHWC or [M, C]).
inline at::Tensor to_kernel_layout(const at::Tensor& t) {
  if (t.is_contiguous()) return t;
  if (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t;
  return t.contiguous();
}

inline LayoutView layout_of(const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 2 || t.dim() == 4, "bvae: expected a 2D or 4D tensor, got ", t.dim(), "D");
  const int64_t channels = t.size(1);
  if (t.dim() == 2) return {ChannelLayout::kChannelInner, t.size(0), channels, 1};
  if (t.is_contiguous()) return {ChannelLayout::kChannelOuter, t.size(0), channels, t.size(2) * t.size(3)};
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "bvae: internal layout error");
  return {ChannelLayout::kChannelInner, t.size(0) * t.size(2) * t.size(3), channels, 1};
}

inline at::MemoryFormat memory_format_of(const at::Tensor& t) {
  return (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast))
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

// Per-device fused primitives.
// bias_act: `z` (an owned temporary in kernel layout) becomes u = z + bias in place; returns (y = a(u), u).
using BiasActFn = std::tuple<at::Tensor, at::Tensor> (*)(at::Tensor z, const c10::optional<at::Tensor>& bias,
                                                         ActParams act);
// act_backward: du = grad * a'(u) in u's layout, and db = sum of du over all but the channel dim (if asked).
using ActBackwardFn = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor& grad, const at::Tensor& u,
                                                             ActParams act, bool bias_grad);

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "bvae: ", name, " must be a floating-point tensor, got ",
              t.scalar_type());
}

template <BiasActFn bias_act>
std::tuple<at::Tensor, at::Tensor> bi_conv2d_impl(const at::Tensor& x, const at::Tensor& weight,
                                                  const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                                  at::IntArrayRef padding, double alpha, double beta,
                                                  double gamma) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4, "bvae::bi_conv2d: x and weight must be 4D");
  auto z = at::convolution(x, weight, c10::nullopt, stride, padding, {1, 1}, false, {0, 0}, 1);
  return bias_act(z.contiguous(memory_format_of(x)), bias, {alpha, beta, gamma});
}

template <BiasActFn bias_act>
std::tuple<at::Tensor, at::Tensor> bi_conv2d_reverse_impl(const at::Tensor& z, const at::Tensor& weight,
                                                          const c10::optional<at::Tensor>& bias,
                                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                                          at::IntArrayRef output_padding, double alpha,
                                                          double beta, double gamma) {
  check_float(z, "z");
  TORCH_CHECK(z.dim() == 4 && weight.dim() == 4, "bvae::bi_conv2d_reverse: z and weight must be 4D");
  auto pre = at::convolution(z, weight, c10::nullopt, stride, padding, {1, 1}, true, output_padding, 1);
  return bias_act(pre.contiguous(memory_format_of(z)), bias, {alpha, beta, gamma});
}

// Shared backward of both conv directions: the transposed flag picks which contraction is "forward".
template <ActBackwardFn act_backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward_impl(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& u,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, bool transposed,
    ActParams act, std::array<bool, 3> output_mask) {
  auto [du, db] = act_backward(grad, u, act, output_mask[2]);
  at::Tensor dinput, dweight;
  if (output_mask[0] || output_mask[1]) {
    auto res = at::convolution_backward(du, input, weight, c10::nullopt, stride, padding, {1, 1}, transposed,
                                        output_padding, 1, {output_mask[0], output_mask[1], false});
    dinput = std::get<0>(res);
    dweight = std::get<1>(res);
  }
  return {dinput, dweight, db};
}

template <ActBackwardFn act_backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bi_conv2d_backward_impl(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& u,
    at::IntArrayRef stride, at::IntArrayRef padding, double alpha, double beta, double gamma,
    std::array<bool, 3> output_mask) {
  return conv_backward_impl<act_backward>(grad, x, weight, u, stride, padding, {0, 0}, false,
                                          {alpha, beta, gamma}, output_mask);
}

template <ActBackwardFn act_backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bi_conv2d_reverse_backward_impl(
    const at::Tensor& grad, const at::Tensor& z, const at::Tensor& weight, const at::Tensor& u,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, double alpha, double beta,
    double gamma, std::array<bool, 3> output_mask) {
  return conv_backward_impl<act_backward>(grad, z, weight, u, stride, padding, output_padding, true,
                                          {alpha, beta, gamma}, output_mask);
}

// Dense layers: x [*, in] @ W^T -> [*, out] (forward); z [*, out] @ W -> [*, in] (reverse).
template <BiasActFn bias_act>
std::tuple<at::Tensor, at::Tensor> linear_impl(const at::Tensor& x, const at::Tensor& weight,
                                               const c10::optional<at::Tensor>& bias, bool reverse,
                                               ActParams act) {
  check_float(x, "x");
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1, "bvae::bi_linear: weight must be 2D and x at least 1D");
  const int64_t k = x.size(-1);
  auto x2 = x.reshape({-1, k});
  auto z = reverse ? at::mm(x2, weight) : at::mm(x2, weight.t());
  auto [y, u] = bias_act(z.contiguous(), bias, act);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = y.size(1);
  return {y.view(out_sizes), u.view(out_sizes)};
}

template <ActBackwardFn act_backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_impl(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& weight, const at::Tensor& u,
                                                                    bool reverse, ActParams act,
                                                                    std::array<bool, 3> output_mask) {
  const int64_t n_out = u.size(-1);
  auto u2 = u.reshape({-1, n_out});
  auto [du, db] = act_backward(grad.reshape({-1, n_out}), u2, act, output_mask[2]);
  auto x2 = x.reshape({-1, x.size(-1)});
  at::Tensor dx, dweight;
  if (output_mask[0]) dx = (reverse ? at::mm(du, weight.t()) : at::mm(du, weight)).view(x.sizes());
  if (output_mask[1]) dweight = reverse ? at::mm(x2.t(), du) : at::mm(du.t(), x2);
  return {dx, dweight, db};
}

template <BiasActFn bias_act>
std::tuple<at::Tensor, at::Tensor> bi_linear_impl(const at::Tensor& x, const at::Tensor& weight,
                                                  const c10::optional<at::Tensor>& bias, double alpha, double beta,
                                                  double gamma) {
  return linear_impl<bias_act>(x, weight, bias, false, {alpha, beta, gamma});
}

template <BiasActFn bias_act>
std::tuple<at::Tensor, at::Tensor> bi_linear_reverse_impl(const at::Tensor& z, const at::Tensor& weight,
                                                          const c10::optional<at::Tensor>& bias, double alpha,
                                                          double beta, double gamma) {
  return linear_impl<bias_act>(z, weight, bias, true, {alpha, beta, gamma});
}

template <ActBackwardFn act_backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bi_linear_backward_impl(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& u, double alpha,
    double beta, double gamma, std::array<bool, 3> output_mask) {
  return linear_backward_impl<act_backward>(grad, x, weight, u, false, {alpha, beta, gamma}, output_mask);
}

template <ActBackwardFn act_backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bi_linear_reverse_backward_impl(
    const at::Tensor& grad, const at::Tensor& z, const at::Tensor& weight, const at::Tensor& u, double alpha,
    double beta, double gamma, std::array<bool, 3> output_mask) {
  return linear_backward_impl<act_backward>(grad, z, weight, u, true, {alpha, beta, gamma}, output_mask);
}

// Elementwise G-NoVa on any dense tensor, through the same primitives. A non-overlapping, dense tensor
// occupies exactly numel consecutive elements whatever its strides, so the kernels see it as a flat
// [numel, 1] array and the result is viewed back with the input's strides: no copies, layout preserved.
inline at::Tensor dense_of(const at::Tensor& t) { return t.is_non_overlapping_and_dense() ? t : t.contiguous(); }

inline at::Tensor flat_view(const at::Tensor& dense) { return dense.as_strided({dense.numel(), 1}, {1, 1}); }

template <BiasActFn bias_act>
at::Tensor gnova_impl(const at::Tensor& u, double alpha, double beta, double gamma) {
  check_float(u, "u");
  auto dense = dense_of(u);
  auto y = std::get<0>(bias_act(flat_view(dense), c10::nullopt, {alpha, beta, gamma}));
  return y.as_strided(dense.sizes(), dense.strides());
}

template <ActBackwardFn act_backward>
at::Tensor gnova_backward_impl(const at::Tensor& grad, const at::Tensor& u, double alpha, double beta,
                               double gamma) {
  check_float(u, "u");
  TORCH_CHECK(grad.sizes() == u.sizes(), "bvae::gnova_backward: grad and u must have the same shape, got ",
              grad.sizes(), " and ", u.sizes());
  TORCH_CHECK(grad.scalar_type() == u.scalar_type(), "bvae::gnova_backward: grad and u must share a dtype");
  auto dense = dense_of(u);
  auto g = grad.strides() == dense.strides() ? grad : at::empty_like(dense).copy_(grad);
  auto du = std::get<0>(act_backward(flat_view(g), flat_view(dense), {alpha, beta, gamma}, false));
  return du.as_strided(dense.sizes(), dense.strides());
}

}  // namespace bvae

// The bvae op contract on the C++ side: activation parameters, argument checks, the kernel layout helpers,
// and the device-generic implementations of every op, written once over two per-device fused primitives.
//
// A bidirectional layer's contraction is ATen's (oneDNN / cuDNN / BLAS); what we add around it is one fused
// pass for scale + bias + activation after the contraction, and one for activation-gradient (+ bias gradient,
// + scale) before the backward contractions. CPU (csrc/cpu) and CUDA (csrc/cuda_ops.cpp) each supply those
// two primitives; the composites below turn them into the ops declared in bvae_ops.cpp.
//
// Every check that needs only shapes, dtypes and devices lives here, runs once per call (in the backend
// kernel), and raises ValueError (TORCH_CHECK_VALUE) with a message that names the argument. The Python fakes
// (bvae_kernels/_library.py) repeat the same checks with the same messages for torch.compile.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <sstream>
#include <string>
#include <tuple>

namespace bvae {

using at::IntArrayRef;
using at::Tensor;
using OptTensor = std::optional<Tensor>;

// a(u) = alpha * u + beta * sigmoid(gamma * u).  sigmoid: (0, 1, 1).  identity: (1, 0, 1).
struct ActParams {
  double alpha;
  double beta;
  double gamma;
  // a'(u) = alpha whatever u is: the backward never reads u, so the forward need not keep it.
  bool constant_slope() const { return beta == 0.0 || gamma == 0.0; }
  // a(u) = u: an input activation that is not applied at all.
  bool identity() const { return alpha == 1.0 && constant_slope(); }
};
constexpr ActParams kIdentity{1.0, 0.0, 1.0};

// ---------------------------------------------------------------------------------------------------------
// formatting for messages (Python spellings: torch.float32, (2, 3), [2, 3])
// ---------------------------------------------------------------------------------------------------------
inline std::string py_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

inline std::string tuple_str(IntArrayRef v) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << (v.size() == 1 ? ",)" : ")");
  return os.str();
}

inline std::string list_str(IntArrayRef v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

// ---------------------------------------------------------------------------------------------------------
// argument checks (ValueError)
// ---------------------------------------------------------------------------------------------------------
inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

inline void check_float(const char* op, const Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor");
  TORCH_CHECK_VALUE(is_float_dtype(t.scalar_type()), op, ": ", name,
                    " must be float16, bfloat16, float32 or float64, got ", py_dtype(t.scalar_type()));
}

// `t` shares `ref`'s dtype and device (ref_name names `ref` in the message).
inline void check_same(const char* op, const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  check_float(op, t, name);
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
                    ref.device());
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", py_dtype(t.scalar_type()),
                    " but ", ref_name, " has ", py_dtype(ref.scalar_type()), "; cast them to one dtype");
}

inline void check_dim(const char* op, const Tensor& t, const char* name, int64_t dim, const char* what) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must be ", dim, "D ", what, ", got shape ",
                    tuple_str(t.sizes()));
}

inline void check_bias(const char* op, const OptTensor& bias, const Tensor& ref, const char* ref_name,
                       int64_t channels, const char* which) {
  if (!bias.has_value() || !bias->defined()) return;
  check_same(op, *bias, "bias", ref, ref_name);
  TORCH_CHECK_VALUE(bias->dim() == 1, op, ": bias must be 1D, got shape ", tuple_str(bias->sizes()));
  TORCH_CHECK_VALUE(bias->size(0) == channels, op, ": bias must have shape [", channels, "] (", which, "), got ",
                    list_str(bias->sizes()));
}

// The reverse scale s (the layer computes a(e^s * contraction + b)): a one-element float tensor on the input's
// device; its dtype may differ from the input's (under autocast the parameter stays float32).
inline void check_log_scale(const char* op, const OptTensor& log_scale, const Tensor& ref, const char* ref_name) {
  if (!log_scale.has_value() || !log_scale->defined()) return;
  check_float(op, *log_scale, "log_scale");
  TORCH_CHECK_VALUE(log_scale->numel() == 1, op, ": log_scale must hold one value, got shape ",
                    tuple_str(log_scale->sizes()));
  TORCH_CHECK_VALUE(log_scale->device() == ref.device(), op, ": log_scale is on ", log_scale->device(), " but ",
                    ref_name, " is on ", ref.device());
}

inline void check_pair(const char* op, IntArrayRef v, const char* name) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must be an int or a pair of ints, got ", list_str(v));
}

// Output sides as ATen computes them; a dilated kernel spans dilation * (kernel - 1) + 1 pixels.
inline int64_t conv_out(int64_t size, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return (size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

inline int64_t conv_transpose_out(int64_t size, int64_t kernel, int64_t stride, int64_t padding,
                                  int64_t output_padding, int64_t dilation) {
  return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1 + output_padding;
}

// Sizes the convolution libraries (oneDNN, cuDNN) and the Triton kernels take as 32-bit ints.
constexpr int64_t kMaxConvArg = (int64_t(1) << 31) - 1;

inline void check_conv_config(const char* op, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                              int64_t groups) {
  check_pair(op, stride, "stride");
  check_pair(op, padding, "padding");
  check_pair(op, dilation, "dilation");
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be >= 1, got ", list_str(stride));
  TORCH_CHECK_VALUE(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be >= 0, got ", list_str(padding));
  TORCH_CHECK_VALUE(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be >= 1, got ", list_str(dilation));
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be >= 1, got ", groups);
  TORCH_CHECK_VALUE(std::max({stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups}) <=
                        kMaxConvArg,
                    op, ": stride, padding, dilation and groups must be < 2^31, got stride ", list_str(stride),
                    ", padding ", list_str(padding), ", dilation ", list_str(dilation), ", groups ", groups);
}

// groups splits both channel counts: weight [C_out, C_in / groups, kh, kw], C_out a multiple of groups.
inline void check_conv_groups(const char* op, const Tensor& weight, int64_t groups) {
  TORCH_CHECK_VALUE(weight.size(0) % groups == 0, op, ": weight's C_out=", weight.size(0),
                    " must be divisible by groups=", groups, " (weight shape ", tuple_str(weight.sizes()), ")");
}

// The op contract for degenerate shapes: a layer's weight has no zero dimension (a layer without weights is
// refused on every backend, in both directions); an empty batch is fine; an output side must be < 2^31.
inline void check_conv_weight(const char* op, const Tensor& weight, const Tensor& inp, const char* inp_name) {
  check_same(op, weight, "weight", inp, inp_name);
  check_dim(op, weight, "weight", 4, "[C_out, C_in, kh, kw]");
  TORCH_CHECK_VALUE(weight.size(0) >= 1 && weight.size(1) >= 1 && weight.size(2) >= 1 && weight.size(3) >= 1, op,
                    ": weight must have C_out >= 1, C_in >= 1 and a kernel of at least 1x1, got shape ",
                    tuple_str(weight.sizes()));
}

inline void check_conv_out(const char* op, const std::array<int64_t, 2>& out) {
  TORCH_CHECK_VALUE(out[0] <= kMaxConvArg && out[1] <= kMaxConvArg, op, ": the output would be ", list_str(out),
                    " pixels: each side must be < 2^31");
}

// Forward direction: x [N, C_in, H, W], weight [C_out, C_in, kh, kw], bias [C_out]. Returns the output (H, W).
inline std::array<int64_t, 2> check_bi_conv2d(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                                              IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                                              int64_t groups) {
  constexpr const char* op = "bi_conv2d";
  check_float(op, x, "x");
  check_dim(op, x, "x", 4, "[N, C_in, H, W]");
  check_conv_weight(op, weight, x, "x");
  check_conv_config(op, stride, padding, dilation, groups);
  check_conv_groups(op, weight, groups);
  TORCH_CHECK_VALUE(x.size(1) == weight.size(1) * groups, op, ": x has ", x.size(1),
                    " channels but weight expects C_in=", weight.size(1) * groups, " (weight shape ",
                    tuple_str(weight.sizes()), ", groups=", groups, ")");
  check_bias(op, bias, x, "x", weight.size(0), "C_out");
  const std::array<int64_t, 2> out{conv_out(x.size(2), weight.size(2), stride[0], padding[0], dilation[0]),
                                   conv_out(x.size(3), weight.size(3), stride[1], padding[1], dilation[1])};
  TORCH_CHECK_VALUE(out[0] >= 1 && out[1] >= 1, op, ": input ", tuple_str(x.sizes().slice(2)),
                    " is too small for kernel ", tuple_str(weight.sizes().slice(2)), " with padding ",
                    list_str(padding), " and dilation ", list_str(dilation), " (output would be ", list_str(out),
                    ")");
  check_conv_out(op, out);
  return out;
}

// Reverse direction: z [N, C_out, H, W] through the same weight [C_out, C_in, kh, kw], bias [C_in].
inline std::array<int64_t, 2> check_bi_conv2d_reverse(const Tensor& z, const Tensor& weight, const OptTensor& bias,
                                                      const OptTensor& log_scale, IntArrayRef stride,
                                                      IntArrayRef padding, IntArrayRef output_padding,
                                                      IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "bi_conv2d_reverse";
  check_float(op, z, "z");
  check_dim(op, z, "z", 4, "[N, C_out, H, W]");
  check_conv_weight(op, weight, z, "z");
  check_conv_config(op, stride, padding, dilation, groups);
  check_conv_groups(op, weight, groups);
  check_pair(op, output_padding, "output_padding");
  for (int i = 0; i < 2; ++i) {  // ATen's rule: smaller than the stride or the dilation
    TORCH_CHECK_VALUE(output_padding[i] >= 0 && (output_padding[i] < stride[i] || output_padding[i] < dilation[i]),
                      op, ": output_padding must be >= 0 and smaller than stride or dilation, got ",
                      list_str(output_padding), " with stride ", list_str(stride), ", dilation ", list_str(dilation));
  }
  TORCH_CHECK_VALUE(z.size(1) == weight.size(0), op, ": z has ", z.size(1),
                    " channels but the reverse direction takes weight's C_out=", weight.size(0), " (weight shape ",
                    tuple_str(weight.sizes()), ")");
  check_bias(op, bias, z, "z", weight.size(1) * groups, "C_in");
  check_log_scale(op, log_scale, z, "z");
  const std::array<int64_t, 2> out{
      conv_transpose_out(z.size(2), weight.size(2), stride[0], padding[0], output_padding[0], dilation[0]),
      conv_transpose_out(z.size(3), weight.size(3), stride[1], padding[1], output_padding[1], dilation[1])};
  TORCH_CHECK_VALUE(out[0] >= 1 && out[1] >= 1, op, ": padding ", list_str(padding), " is too large for input ",
                    tuple_str(z.sizes().slice(2)), " (output ", list_str(out), ")");
  check_conv_out(op, out);
  return out;
}

// Dense layers: x [*, in] (forward, weight [out, in]) or z [*, out] (reverse).
inline void check_bi_linear(const char* op, const Tensor& inp, const char* name, const Tensor& weight,
                            const OptTensor& bias, const OptTensor& log_scale, bool reverse) {
  check_float(op, inp, name);
  TORCH_CHECK_VALUE(inp.dim() >= 1, op, ": ", name, " must be 1D or more [*, features], got shape ",
                    tuple_str(inp.sizes()));
  check_same(op, weight, "weight", inp, name);
  check_dim(op, weight, "weight", 2, "[out_features, in_features]");
  TORCH_CHECK_VALUE(weight.size(0) >= 1 && weight.size(1) >= 1, op,
                    ": weight must have out_features >= 1 and in_features >= 1, got shape ", tuple_str(weight.sizes()));
  const int64_t k_dim = reverse ? 0 : 1;
  TORCH_CHECK_VALUE(inp.size(-1) == weight.size(k_dim), op, ": ", name, " has ", inp.size(-1),
                    " features but weight ", tuple_str(weight.sizes()), " expects ", weight.size(k_dim));
  check_bias(op, bias, inp, name, weight.size(1 - k_dim), reverse ? "in_features" : "out_features");
  check_log_scale(op, log_scale, inp, name);
}

// The incoming gradient of a backward op (and the saved pre-activation, when given) has the forward output's
// shape; u may be absent only when the activation's slope is constant.
inline void check_grad(const char* op, const Tensor& grad, const OptTensor& u, const Tensor& inp, const char* name,
                       IntArrayRef out_sizes, ActParams act) {
  TORCH_CHECK_VALUE(act.constant_slope() || (u.has_value() && u->defined()), op,
                    ": u (the pre-activation) is required unless the activation's slope is constant (beta == 0)");
  check_same(op, grad, "grad", inp, name);
  TORCH_CHECK_VALUE(grad.sizes() == out_sizes, op, ": grad must have the output's shape ", list_str(out_sizes),
                    ", got ", list_str(grad.sizes()));
  if (u.has_value() && u->defined()) {
    check_same(op, *u, "u", inp, name);
    TORCH_CHECK_VALUE(u->sizes() == out_sizes, op, ": u must have the output's shape ", list_str(out_sizes), ", got ",
                      list_str(u->sizes()));
  }
}

// ---------------------------------------------------------------------------------------------------------
// kernel layouts
// ---------------------------------------------------------------------------------------------------------
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
inline Tensor to_kernel_layout(const Tensor& t) {
  if (t.is_contiguous()) return t;
  if (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t;
  return t.contiguous();
}

inline LayoutView layout_of(const Tensor& t) {
  TORCH_CHECK(t.dim() == 2 || t.dim() == 4, "bvae: expected a 2D or 4D tensor, got ", t.dim(), "D");
  const int64_t channels = t.size(1);
  if (t.dim() == 2) return {ChannelLayout::kChannelInner, t.size(0), channels, 1};
  if (t.is_contiguous()) return {ChannelLayout::kChannelOuter, t.size(0), channels, t.size(2) * t.size(3)};
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "bvae: internal layout error");
  return {ChannelLayout::kChannelInner, t.size(0) * t.size(2) * t.size(3), channels, 1};
}

// Outputs follow the input's memory format: channels_last in, channels_last out.
inline at::MemoryFormat memory_format_of(const Tensor& t) {
  return (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast))
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

// A non-overlapping, dense tensor occupies exactly numel consecutive elements whatever its strides, so the
// kernels can see it as a flat [numel, 1] array and the result is viewed back with the input's strides.
inline Tensor dense_of(const Tensor& t) { return t.is_non_overlapping_and_dense() ? t : t.contiguous(); }
inline Tensor flat_view(const Tensor& dense) { return dense.as_strided({dense.numel(), 1}, {1, 1}); }

// ---------------------------------------------------------------------------------------------------------
// the two per-device primitives
// ---------------------------------------------------------------------------------------------------------
// bias_act: `z` is an owned temporary in kernel layout; u = e^s * z + bias (e^s only with a log_scale).
//   keep_u: returns (y, u) with u stored over z and y a new tensor; else returns (y, undefined) with y stored
//   over z. With no bias and no scale, z is only read when keep_u is false and y must be a new tensor: pass
//   in_place = false (the gnova op hands the caller's tensor).
// act_backward: du = grad * a'(u) in u's kernel layout (u undefined: a' = alpha), db = sum of du over all but
//   the channel dim (if bias_grad), and the returned du is multiplied by e^s (with a log_scale) after db.
struct BiasActArgs {
  const OptTensor& bias;
  const OptTensor& log_scale;
  ActParams act;
  bool keep_u;
  bool in_place;
};
using BiasActFn = std::tuple<Tensor, Tensor> (*)(Tensor z, const BiasActArgs& args);
using ActBackwardFn = std::tuple<Tensor, Tensor> (*)(const Tensor& grad, const OptTensor& u, ActParams act,
                                                     const OptTensor& log_scale, bool bias_grad);

// ds = d loss / d s for u = e^s * T(z) + b: <du, e^s T(z)> = <e^s T*(du), z> = <dz, z>. On CPU, for two dense
// tensors laid out alike (what the kernels produce), one sequential pass summed in double (deterministic, and a
// handful of ATen calls fewer on the reverse layers of every step); otherwise ATen ops in opmath.
inline Tensor log_scale_grad(const Tensor& dz, const Tensor& z, const Tensor& log_scale) {
  const auto acc = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  if (z.device().is_cpu() && !z.requires_grad() && !dz.requires_grad() && dz.strides() == z.strides() &&
      z.is_non_overlapping_and_dense() && dz.scalar_type() == z.scalar_type()) {
    double sum = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "bvae_log_scale_grad", [&] {
      const scalar_t* a = dz.const_data_ptr<scalar_t>();
      const scalar_t* b = z.const_data_ptr<scalar_t>();
      for (int64_t i = 0, n = z.numel(); i < n; ++i) sum += static_cast<double>(a[i]) * static_cast<double>(b[i]);
    });
    return at::full(log_scale.sizes(), sum, log_scale.options());
  }
  return at::sum(at::mul(dz.to(acc), z.to(acc))).to(log_scale.scalar_type()).reshape(log_scale.sizes());
}

// ---------------------------------------------------------------------------------------------------------
// the ops, device-generic
// ---------------------------------------------------------------------------------------------------------
// Elementwise G-NoVa on any tensor, through the same primitives: no copies, the input's strides kept (a
// non-dense input is made contiguous), the input never written.
template <BiasActFn bias_act>
Tensor gnova_impl(const Tensor& u, ActParams act) {
  check_float("gnova", u, "u");
  const auto dense = dense_of(u);
  auto y = std::get<0>(bias_act(flat_view(dense), {std::nullopt, std::nullopt, act, false, false}));
  return y.as_strided(dense.sizes(), dense.strides());
}

template <ActBackwardFn act_backward>
Tensor gnova_backward_impl(const Tensor& grad, const Tensor& u, ActParams act) {
  check_float("gnova_bwd", u, "u");
  check_grad("gnova_bwd", grad, u, u, "u", u.sizes(), act);
  const auto dense = dense_of(u);
  const auto g = grad.strides() == dense.strides() ? grad : at::empty_like(dense).copy_(grad);
  auto du = std::get<0>(act_backward(flat_view(g), flat_view(dense), act, std::nullopt, false));
  return du.as_strided(dense.sizes(), dense.strides());
}

// The contraction of both conv directions. ATen's convolution entry point chooses a backend on every call
// (ConvParams, then oneDNN's primitive setup for strided or batched float convs), which on small CPU tensors
// costs several times the arithmetic: at batch 1, a 4x4/2 conv of 16 -> 32 channels on 14x14 takes 59 us
// through at::convolution and 35 us through ATen's im2col + GEMM convolution called directly (a forward, a
// reverse and the gradients of both: 414 us vs 215 us). So below kDirectConvMacs multiply-adds per call the CPU
// kernels call that convolution directly (float and double, no dilation, no groups); above it oneDNN's kernels
// win (batch 16-64: 1.5-3.5x faster) and at::convolution decides as before. The crossover, measured over 128
// shapes (batch 1-16, 4-64 channels, 7-28 pixels, kernel 3-4, stride 1-2; scripts/cpu_conv_crossover.py), lies
// between 0.4 and 1 M multiply-adds with one thread and near 1.2 M with two.
// im2col multiplies its zero padding by the other operand: with an inf or NaN there (a weight, an incoming
// gradient) it puts a NaN at border pixels where at::convolution's oneDNN path, which skips padded taps, has a
// finite value. So a direct result holding a NaN (a scan, no ATen ops) is computed again through
// at::convolution: inputs with non-finite values get exactly the results they got before.
constexpr int64_t kDirectConvMacs = int64_t(1) << 19;

// Whether a CPU tensor holds a NaN: one pass over a dense float or double tensor's memory, no ATen ops.
inline bool has_nan(const Tensor& t) {
  if (!t.defined() || t.numel() == 0) return false;
  if (!t.is_non_overlapping_and_dense()) return at::isnan(t).any().item<bool>();
  return AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "has_nan", [&] {
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    bool nan = false;
    for (int64_t i = 0, n = t.numel(); i < n; ++i) nan |= p[i] != p[i];
    return nan;
  });
}

// `pixels`: the spatial size of the conv side of the contraction (the forward's output, the reverse's input).
inline bool direct_cpu_conv(const Tensor& input, const Tensor& weight, int64_t pixels, IntArrayRef dilation,
                            int64_t groups) {
  const auto dtype = input.scalar_type();
  return input.is_cpu() && (dtype == at::kFloat || dtype == at::kDouble) && groups == 1 && dilation[0] == 1 &&
         dilation[1] == 1 && input.size(0) >= 1 && pixels >= 1 &&
         input.size(0) * pixels * weight.numel() <= kDirectConvMacs;
}

inline int64_t conv_side_pixels(const Tensor& input, const Tensor& weight, IntArrayRef stride, IntArrayRef padding,
                                IntArrayRef dilation, bool transposed) {
  if (transposed) return input.size(2) * input.size(3);
  return conv_out(input.size(2), weight.size(2), stride[0], padding[0], dilation[0]) *
         conv_out(input.size(3), weight.size(3), stride[1], padding[1], dilation[1]);
}

// conv2d(input, weight) or conv_transpose2d(input, weight), no bias.
inline Tensor conv_contraction(const Tensor& input, const Tensor& weight, IntArrayRef stride, IntArrayRef padding,
                               IntArrayRef output_padding, IntArrayRef dilation, int64_t groups, bool transposed) {
  const int64_t pixels = conv_side_pixels(input, weight, stride, padding, dilation, transposed);
  if (direct_cpu_conv(input, weight, pixels, dilation, groups)) {
    // dense operands in one layout, as at::convolution hands them to this backend
    const auto format = memory_format_of(input);
    const auto in = input.contiguous(format), w = weight.contiguous(format);
    const auto kernel = weight.sizes().slice(2);
    auto out = transposed ? at::slow_conv_transpose2d(in, w, kernel, std::nullopt, stride, padding,
                                                      output_padding, dilation)
                          : at::_slow_conv2d_forward(in, w, kernel, std::nullopt, stride, padding);
    if (!has_nan(out)) return out;
  }
  return at::convolution(input, weight, std::nullopt, stride, padding, dilation, transposed, output_padding, groups);
}

// The contraction's gradients from du, the gradient of its output: (d input, d weight), each only if asked for.
// A transposed conv's input gradient is the conv of du, its weight gradient the conv weight gradient with du as
// the input and the layer's input as the output gradient.
inline std::tuple<Tensor, Tensor> conv_contraction_backward(const Tensor& du, const Tensor& input,
                                                            const Tensor& weight, IntArrayRef stride,
                                                            IntArrayRef padding, IntArrayRef output_padding,
                                                            IntArrayRef dilation, int64_t groups, bool transposed,
                                                            bool need_input, bool need_weight) {
  const int64_t pixels = conv_side_pixels(input, weight, stride, padding, dilation, transposed);
  if (direct_cpu_conv(input, weight, pixels, dilation, groups)) {
    const auto format = memory_format_of(input);
    const auto in = input.contiguous(format), w = weight.contiguous(format), d = du.contiguous(format);
    const auto kernel = weight.sizes().slice(2);
    Tensor dinput, dweight;
    if (!transposed) {
      std::tie(dinput, dweight, std::ignore) =
          at::_slow_conv2d_backward(d, in, w, kernel, stride, padding, {need_input, need_weight, false});
    } else {
      if (need_input) dinput = at::_slow_conv2d_forward(d, w, kernel, std::nullopt, stride, padding);
      if (need_weight) {
        dweight = std::get<1>(at::_slow_conv2d_backward(in, d, w, kernel, stride, padding, {false, true, false}));
      }
    }
    // a gradient holding a NaN is computed again through at::convolution_backward (see kDirectConvMacs)
    const bool redo_input = need_input && has_nan(dinput), redo_weight = need_weight && has_nan(dweight);
    if (!redo_input && !redo_weight) return {dinput, dweight};
    auto res = at::convolution_backward(du, input, weight, std::nullopt, stride, padding, dilation, transposed,
                                        output_padding, groups, {redo_input, redo_weight, false});
    return {redo_input ? std::get<0>(res) : dinput, redo_weight ? std::get<1>(res) : dweight};
  }
  auto res = at::convolution_backward(du, input, weight, std::nullopt, stride, padding, dilation, transposed,
                                      output_padding, groups, {need_input, need_weight, false});
  return {std::get<0>(res), std::get<1>(res)};
}

// A layer's input as its contraction reads it: a_in(input) (a temporary, never saved), or input itself.
template <BiasActFn bias_act>
Tensor input_act(const Tensor& input, ActParams in_act) {
  return in_act.identity() ? input : gnova_impl<bias_act>(input, in_act);
}

// The gradient of the layer's input from that of a_in(input): d_input = d_eff * a_in'(input).
template <ActBackwardFn act_backward>
Tensor input_act_grad(const Tensor& d_eff, const Tensor& input, ActParams in_act) {
  if (in_act.identity() || !d_eff.defined()) return d_eff;
  if (in_act.constant_slope()) return d_eff * in_act.alpha;
  return gnova_backward_impl<act_backward>(d_eff, input, in_act);
}

template <BiasActFn bias_act>
std::tuple<Tensor, Tensor> bi_conv2d_impl(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                                          IntArrayRef stride, IntArrayRef padding, ActParams act, bool keep_u,
                                          ActParams in_act, IntArrayRef dilation, int64_t groups) {
  check_bi_conv2d(x, weight, bias, stride, padding, dilation, groups);
  auto z = conv_contraction(input_act<bias_act>(x, in_act), weight, stride, padding, {0, 0}, dilation, groups, false);
  return bias_act(z.contiguous(memory_format_of(x)), {bias, std::nullopt, act, keep_u, true});
}

template <BiasActFn bias_act>
std::tuple<Tensor, Tensor> bi_conv2d_reverse_impl(const Tensor& z, const Tensor& weight, const OptTensor& bias,
                                                  const OptTensor& log_scale, IntArrayRef stride, IntArrayRef padding,
                                                  IntArrayRef output_padding, ActParams act, bool keep_u,
                                                  ActParams in_act, IntArrayRef dilation, int64_t groups) {
  check_bi_conv2d_reverse(z, weight, bias, log_scale, stride, padding, output_padding, dilation, groups);
  auto pre = conv_contraction(input_act<bias_act>(z, in_act), weight, stride, padding, output_padding, dilation,
                              groups, true);
  return bias_act(pre.contiguous(memory_format_of(z)), {bias, log_scale, act, keep_u, true});
}

// Shared backward of both conv directions: `transposed` says which contraction was the layer's. With an input
// activation the contraction's input a_in(input) is recomputed here (a temporary) and the input's gradient is
// that of a_in(input) times a_in'(input); the scale's gradient pairs the former with a_in(input).
template <BiasActFn bias_act, ActBackwardFn act_backward>
std::tuple<Tensor, Tensor, Tensor, Tensor> conv_backward_impl(const Tensor& grad, const Tensor& input,
                                                              const Tensor& weight, const OptTensor& u,
                                                              const OptTensor& log_scale, IntArrayRef stride,
                                                              IntArrayRef padding, IntArrayRef output_padding,
                                                              bool transposed, ActParams act,
                                                              std::array<bool, 4> mask, ActParams in_act,
                                                              IntArrayRef dilation, int64_t groups) {
  const bool scale_grad = mask[3] && log_scale.has_value() && log_scale->defined();
  auto [du, db] = act_backward(grad, u, act, log_scale, mask[2]);
  const bool need_input = mask[0] || scale_grad;
  Tensor dinput, dweight, dscale;
  const bool need_eff = mask[1] || scale_grad;  // the contraction's input itself (not only its shape) is read
  const Tensor eff = need_eff ? input_act<bias_act>(input, in_act) : input;
  if (need_input || mask[1]) {
    std::tie(dinput, dweight) = conv_contraction_backward(du, eff, weight, stride, padding, output_padding, dilation,
                                                          groups, transposed, need_input, mask[1]);
    // ATen picks the gradients' memory formats; ours follow their tensors' (what the fakes promise).
    if (need_input) dinput = dinput.contiguous(memory_format_of(input));
    if (mask[1]) dweight = dweight.contiguous(memory_format_of(weight));
  }
  if (scale_grad) dscale = log_scale_grad(dinput, eff, *log_scale);
  if (mask[0]) {
    dinput = input_act_grad<act_backward>(dinput, input, in_act).contiguous(memory_format_of(input));
  } else {
    dinput = Tensor();
  }
  return {dinput, dweight, db, dscale};
}

template <BiasActFn bias_act, ActBackwardFn act_backward>
std::tuple<Tensor, Tensor, Tensor> bi_conv2d_backward_impl(const Tensor& grad, const Tensor& x, const Tensor& weight,
                                                           const OptTensor& u, IntArrayRef stride,
                                                           IntArrayRef padding, ActParams act,
                                                           std::array<bool, 3> mask, ActParams in_act,
                                                           IntArrayRef dilation, int64_t groups) {
  const auto out = check_bi_conv2d(x, weight, std::nullopt, stride, padding, dilation, groups);
  check_grad("bi_conv2d_bwd", grad, u, x, "x", {x.size(0), weight.size(0), out[0], out[1]}, act);
  auto [dx, dw, db, ds] = conv_backward_impl<bias_act, act_backward>(
      grad, x, weight, u, std::nullopt, stride, padding, {0, 0}, false, act, {mask[0], mask[1], mask[2], false},
      in_act, dilation, groups);
  return {dx, dw, db};
}

template <BiasActFn bias_act, ActBackwardFn act_backward>
std::tuple<Tensor, Tensor, Tensor, Tensor> bi_conv2d_reverse_backward_impl(
    const Tensor& grad, const Tensor& z, const Tensor& weight, const OptTensor& u, const OptTensor& log_scale,
    IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, ActParams act, std::array<bool, 4> mask,
    ActParams in_act, IntArrayRef dilation, int64_t groups) {
  const auto out =
      check_bi_conv2d_reverse(z, weight, std::nullopt, log_scale, stride, padding, output_padding, dilation, groups);
  check_grad("bi_conv2d_reverse_bwd", grad, u, z, "z", {z.size(0), weight.size(1) * groups, out[0], out[1]}, act);
  return conv_backward_impl<bias_act, act_backward>(grad, z, weight, u, log_scale, stride, padding, output_padding,
                                                    true, act, mask, in_act, dilation, groups);
}

// Dense layers: x [*, in] @ W^T -> [*, out] (forward); z [*, out] @ W -> [*, in] (reverse).
template <BiasActFn bias_act>
std::tuple<Tensor, Tensor> linear_impl(const Tensor& inp, const Tensor& weight, const OptTensor& bias,
                                       const OptTensor& log_scale, bool reverse, ActParams act, bool keep_u,
                                       ActParams in_act) {
  check_bi_linear(reverse ? "bi_linear_reverse" : "bi_linear", inp, reverse ? "z" : "x", weight, bias, log_scale,
                  reverse);
  const auto inp2 = input_act<bias_act>(inp, in_act).reshape({-1, inp.size(-1)});
  auto pre = reverse ? at::mm(inp2, weight) : at::mm(inp2, weight.t());
  auto [y, u] = bias_act(pre.contiguous(), {bias, log_scale, act, keep_u, true});
  auto out_sizes = inp.sizes().vec();
  out_sizes.back() = y.size(1);
  return {y.view(out_sizes), keep_u ? u.view(out_sizes) : u};
}

template <BiasActFn bias_act, ActBackwardFn act_backward>
std::tuple<Tensor, Tensor, Tensor, Tensor> linear_backward_impl(const Tensor& grad, const Tensor& inp,
                                                                const Tensor& weight, const OptTensor& u,
                                                                const OptTensor& log_scale, bool reverse,
                                                                ActParams act, std::array<bool, 4> mask,
                                                                ActParams in_act) {
  const char* op = reverse ? "bi_linear_reverse_bwd" : "bi_linear_bwd";
  check_bi_linear(op, inp, reverse ? "z" : "x", weight, std::nullopt, log_scale, reverse);
  auto out_sizes = inp.sizes().vec();
  out_sizes.back() = weight.size(reverse ? 1 : 0);
  check_grad(op, grad, u, inp, reverse ? "z" : "x", out_sizes, act);
  const int64_t n_out = out_sizes.back();
  OptTensor u2;
  if (u.has_value() && u->defined()) u2 = u->reshape({-1, n_out});
  const bool scale_grad = mask[3] && log_scale.has_value() && log_scale->defined();
  auto [du, db] = act_backward(grad.reshape({-1, n_out}), u2, act, log_scale, mask[2]);
  const Tensor eff = (mask[1] || scale_grad) ? input_act<bias_act>(inp, in_act) : inp;
  const auto inp2 = eff.reshape({-1, inp.size(-1)});
  Tensor dinp, dweight, dscale;
  if (mask[0] || scale_grad) dinp = (reverse ? at::mm(du, weight.t()) : at::mm(du, weight)).view(inp.sizes());
  if (mask[1]) dweight = reverse ? at::mm(inp2.t(), du) : at::mm(du.t(), inp2);
  if (scale_grad) dscale = log_scale_grad(dinp, eff, *log_scale);
  dinp = mask[0] ? input_act_grad<act_backward>(dinp, inp, in_act).contiguous() : Tensor();
  return {dinp, dweight, db, dscale};
}

// ---------------------------------------------------------------------------------------------------------
// the kernels a device registers (schemas in bvae_ops.cpp)
// ---------------------------------------------------------------------------------------------------------
template <BiasActFn bias_act, ActBackwardFn act_backward>
struct DeviceOps {
  // (ia, ib, ig): the input activation's parameters, last in every layer op (identity by default).
  static Tensor gnova(const Tensor& u, double alpha, double beta, double gamma) {
    return gnova_impl<bias_act>(u, {alpha, beta, gamma});
  }
  static Tensor gnova_bwd(const Tensor& grad, const Tensor& u, double alpha, double beta, double gamma) {
    return gnova_backward_impl<act_backward>(grad, u, {alpha, beta, gamma});
  }
  // Conv ops take (dilation, groups) after that.
  static Tensor bi_conv2d(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride,
                          IntArrayRef padding, double alpha, double beta, double gamma, double ia, double ib,
                          double ig, IntArrayRef dilation, int64_t groups) {
    return std::get<0>(bi_conv2d_impl<bias_act>(x, w, b, stride, padding, {alpha, beta, gamma}, false, {ia, ib, ig},
                                                dilation, groups));
  }
  static std::tuple<Tensor, Tensor> bi_conv2d_fwd(const Tensor& x, const Tensor& w, const OptTensor& b,
                                                  IntArrayRef stride, IntArrayRef padding, double alpha, double beta,
                                                  double gamma, double ia, double ib, double ig,
                                                  IntArrayRef dilation, int64_t groups) {
    return bi_conv2d_impl<bias_act>(x, w, b, stride, padding, {alpha, beta, gamma}, true, {ia, ib, ig}, dilation,
                                    groups);
  }
  static std::tuple<Tensor, Tensor, Tensor> bi_conv2d_bwd(const Tensor& grad, const Tensor& x, const Tensor& w,
                                                          const OptTensor& u, IntArrayRef stride,
                                                          IntArrayRef padding, double alpha, double beta,
                                                          double gamma, std::array<bool, 3> mask, double ia,
                                                          double ib, double ig, IntArrayRef dilation,
                                                          int64_t groups) {
    return bi_conv2d_backward_impl<bias_act, act_backward>(grad, x, w, u, stride, padding, {alpha, beta, gamma},
                                                           mask, {ia, ib, ig}, dilation, groups);
  }
  static Tensor bi_conv2d_reverse(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                  IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, double alpha,
                                  double beta, double gamma, double ia, double ib, double ig, IntArrayRef dilation,
                                  int64_t groups) {
    return std::get<0>(bi_conv2d_reverse_impl<bias_act>(z, w, b, s, stride, padding, output_padding,
                                                        {alpha, beta, gamma}, false, {ia, ib, ig}, dilation, groups));
  }
  static std::tuple<Tensor, Tensor> bi_conv2d_reverse_fwd(const Tensor& z, const Tensor& w, const OptTensor& b,
                                                          const OptTensor& s, IntArrayRef stride,
                                                          IntArrayRef padding, IntArrayRef output_padding,
                                                          double alpha, double beta, double gamma, double ia,
                                                          double ib, double ig, IntArrayRef dilation,
                                                          int64_t groups) {
    return bi_conv2d_reverse_impl<bias_act>(z, w, b, s, stride, padding, output_padding, {alpha, beta, gamma}, true,
                                            {ia, ib, ig}, dilation, groups);
  }
  static std::tuple<Tensor, Tensor, Tensor, Tensor> bi_conv2d_reverse_bwd(
      const Tensor& grad, const Tensor& z, const Tensor& w, const OptTensor& u, const OptTensor& s,
      IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, double alpha, double beta, double gamma,
      std::array<bool, 4> mask, double ia, double ib, double ig, IntArrayRef dilation, int64_t groups) {
    return bi_conv2d_reverse_backward_impl<bias_act, act_backward>(grad, z, w, u, s, stride, padding, output_padding,
                                                                   {alpha, beta, gamma}, mask, {ia, ib, ig},
                                                                   dilation, groups);
  }
  static Tensor bi_linear(const Tensor& x, const Tensor& w, const OptTensor& b, double alpha, double beta,
                          double gamma, double ia, double ib, double ig) {
    return std::get<0>(linear_impl<bias_act>(x, w, b, std::nullopt, false, {alpha, beta, gamma}, false, {ia, ib, ig}));
  }
  static std::tuple<Tensor, Tensor> bi_linear_fwd(const Tensor& x, const Tensor& w, const OptTensor& b, double alpha,
                                                  double beta, double gamma, double ia, double ib, double ig) {
    return linear_impl<bias_act>(x, w, b, std::nullopt, false, {alpha, beta, gamma}, true, {ia, ib, ig});
  }
  static std::tuple<Tensor, Tensor, Tensor> bi_linear_bwd(const Tensor& grad, const Tensor& x, const Tensor& w,
                                                          const OptTensor& u, double alpha, double beta, double gamma,
                                                          std::array<bool, 3> mask, double ia, double ib, double ig) {
    auto [dx, dw, db, ds] = linear_backward_impl<bias_act, act_backward>(
        grad, x, w, u, std::nullopt, false, {alpha, beta, gamma}, {mask[0], mask[1], mask[2], false}, {ia, ib, ig});
    return {dx, dw, db};
  }
  static Tensor bi_linear_reverse(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                  double alpha, double beta, double gamma, double ia, double ib, double ig) {
    return std::get<0>(linear_impl<bias_act>(z, w, b, s, true, {alpha, beta, gamma}, false, {ia, ib, ig}));
  }
  static std::tuple<Tensor, Tensor> bi_linear_reverse_fwd(const Tensor& z, const Tensor& w, const OptTensor& b,
                                                          const OptTensor& s, double alpha, double beta, double gamma,
                                                          double ia, double ib, double ig) {
    return linear_impl<bias_act>(z, w, b, s, true, {alpha, beta, gamma}, true, {ia, ib, ig});
  }
  static std::tuple<Tensor, Tensor, Tensor, Tensor> bi_linear_reverse_bwd(const Tensor& grad, const Tensor& z,
                                                                          const Tensor& w, const OptTensor& u,
                                                                          const OptTensor& s, double alpha,
                                                                          double beta, double gamma,
                                                                          std::array<bool, 4> mask, double ia,
                                                                          double ib, double ig) {
    return linear_backward_impl<bias_act, act_backward>(grad, z, w, u, s, true, {alpha, beta, gamma}, mask,
                                                        {ia, ib, ig});
  }

  // Registers every op's kernel for one dispatch key (the `prefix` family: "" or "triton_" fallbacks).
  static void register_all(torch::Library& m) {
    m.impl("gnova", &gnova);
    m.impl("gnova_bwd", &gnova_bwd);
    m.impl("bi_conv2d", &bi_conv2d);
    m.impl("bi_conv2d_fwd", &bi_conv2d_fwd);
    m.impl("bi_conv2d_bwd", &bi_conv2d_bwd);
    m.impl("bi_conv2d_reverse", &bi_conv2d_reverse);
    m.impl("bi_conv2d_reverse_fwd", &bi_conv2d_reverse_fwd);
    m.impl("bi_conv2d_reverse_bwd", &bi_conv2d_reverse_bwd);
    m.impl("bi_linear", &bi_linear);
    m.impl("bi_linear_fwd", &bi_linear_fwd);
    m.impl("bi_linear_bwd", &bi_linear_bwd);
    m.impl("bi_linear_reverse", &bi_linear_reverse);
    m.impl("bi_linear_reverse_fwd", &bi_linear_reverse_fwd);
    m.impl("bi_linear_reverse_bwd", &bi_linear_reverse_bwd);
  }
};

}  // namespace bvae

// Autograd and autocast for every bvae op, in C++ (as torchvision's C++ ops do): a call with grad never
// enters Python. Registered for both op families, bvae::<op> (CPU/CUDA kernels in C++) and bvae::triton_<op>
// (Triton kernels registered from Python), which share their schemas (bvae_ops.cpp).
//
// For each public op `X`:
// - X's Autograd kernel runs X itself below autograd when nothing needs a gradient (no pre-activation is kept),
//   else an autograd Function whose forward runs X_fwd (y and the pre-activation u) and saves the inputs and u;
//   with a constant-slope activation (beta == 0: identity) it runs X and saves no u at all.
// - The Function's backward calls X_bwd through the dispatcher. First-order gradients take X_bwd's fused
//   kernels. When a graph of the gradient is asked for (create_graph=True), u is recomputed from the saved
//   inputs with differentiable ATen ops and X_bwd's Autograd kernel runs its ATen composite, so every higher
//   derivative is exact and still leaves C++ only for ATen.
// - The bidirectional ops (X and X_fwd) get Autocast kernels that cast floating inputs to the autocast dtype, as
//   F.conv2d / F.linear do (float64 and the reverse scale stay as they are); gnova, elementwise, runs in its
//   input's dtype, as eager pointwise ops do under autocast.
// - Under a torch.func transform (grad, vjp, jacrev, jvp, jacfwd, hessian, vmap) or with a forward-mode tangent
//   on an input, every op runs its composite of differentiable ATen ops instead (needs_composite), so the
//   transforms get exact answers, never an error from the C++ Function or a silent zero tangent.
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include "bvae.h"

namespace bvae {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Function;
using torch::autograd::variable_list;
using Mask3 = std::array<bool, 3>;
using Mask4 = std::array<bool, 4>;
using Tensor2 = std::tuple<Tensor, Tensor>;
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// ---------------------------------------------------------------------------------------------------------
// op handles of one family, looked up once
// ---------------------------------------------------------------------------------------------------------
enum class Impl { kCompiled, kTriton };

using GnovaSig = Tensor(const Tensor&, double, double, double);
using GnovaBwdSig = Tensor(const Tensor&, const Tensor&, double, double, double);
// conv ops end in (dilation, groups)
using ConvSig = Tensor(const Tensor&, const Tensor&, const OptTensor&, IntArrayRef, IntArrayRef, double, double,
                       double, double, double, double, IntArrayRef, int64_t);
using ConvFwdSig = Tensor2(const Tensor&, const Tensor&, const OptTensor&, IntArrayRef, IntArrayRef, double, double,
                           double, double, double, double, IntArrayRef, int64_t);
using ConvBwdSig = Tensor3(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, IntArrayRef, IntArrayRef,
                           double, double, double, Mask3, double, double, double, IntArrayRef, int64_t);
using RevSig = Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, IntArrayRef, IntArrayRef,
                      IntArrayRef, double, double, double, double, double, double, IntArrayRef, int64_t);
using RevFwdSig = Tensor2(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, IntArrayRef, IntArrayRef,
                          IntArrayRef, double, double, double, double, double, double, IntArrayRef, int64_t);
using RevBwdSig = Tensor4(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                          IntArrayRef, IntArrayRef, IntArrayRef, double, double, double, Mask4, double, double, double,
                          IntArrayRef, int64_t);
using LinSig = Tensor(const Tensor&, const Tensor&, const OptTensor&, double, double, double, double, double,
                      double);
using LinFwdSig = Tensor2(const Tensor&, const Tensor&, const OptTensor&, double, double, double, double, double,
                          double);
using LinBwdSig = Tensor3(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, double, double, double,
                          Mask3, double, double, double);
using LinRevSig = Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, double, double, double,
                         double, double, double);
using LinRevFwdSig = Tensor2(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, double, double, double,
                             double, double, double);
using LinRevBwdSig = Tensor4(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, double,
                             double, double, Mask4, double, double, double);

// The op handles of one family, looked up once. The family is a run-time value inside the autograd Functions
// (one set of Function classes serves both: half the template instances, and half the compile time).
struct Ops {
  explicit Ops(const char* prefix) : prefix_(prefix) {}
  template <typename Sig>
  c10::TypedOperatorHandle<Sig> find(const char* name) const {
    const std::string qualified = std::string("bvae::") + prefix_ + name;
    return c10::Dispatcher::singleton().findSchemaOrThrow(qualified.c_str(), "").typed<Sig>();
  }
  const char* prefix_;
  c10::TypedOperatorHandle<GnovaSig> gnova = find<GnovaSig>("gnova");
  c10::TypedOperatorHandle<GnovaBwdSig> gnova_bwd = find<GnovaBwdSig>("gnova_bwd");
  c10::TypedOperatorHandle<ConvSig> bi_conv2d = find<ConvSig>("bi_conv2d");
  c10::TypedOperatorHandle<ConvFwdSig> bi_conv2d_fwd = find<ConvFwdSig>("bi_conv2d_fwd");
  c10::TypedOperatorHandle<ConvBwdSig> bi_conv2d_bwd = find<ConvBwdSig>("bi_conv2d_bwd");
  c10::TypedOperatorHandle<RevSig> bi_conv2d_reverse = find<RevSig>("bi_conv2d_reverse");
  c10::TypedOperatorHandle<RevFwdSig> bi_conv2d_reverse_fwd = find<RevFwdSig>("bi_conv2d_reverse_fwd");
  c10::TypedOperatorHandle<RevBwdSig> bi_conv2d_reverse_bwd = find<RevBwdSig>("bi_conv2d_reverse_bwd");
  c10::TypedOperatorHandle<LinSig> bi_linear = find<LinSig>("bi_linear");
  c10::TypedOperatorHandle<LinFwdSig> bi_linear_fwd = find<LinFwdSig>("bi_linear_fwd");
  c10::TypedOperatorHandle<LinBwdSig> bi_linear_bwd = find<LinBwdSig>("bi_linear_bwd");
  c10::TypedOperatorHandle<LinRevSig> bi_linear_reverse = find<LinRevSig>("bi_linear_reverse");
  c10::TypedOperatorHandle<LinRevFwdSig> bi_linear_reverse_fwd = find<LinRevFwdSig>("bi_linear_reverse_fwd");
  c10::TypedOperatorHandle<LinRevBwdSig> bi_linear_reverse_bwd = find<LinRevBwdSig>("bi_linear_reverse_bwd");
};

const Ops& ops(Impl impl) {
  static const Ops compiled(""), triton("triton_");
  return impl == Impl::kTriton ? triton : compiled;
}

template <Impl I>
const Ops& ops() {
  return ops(I);
}

// ---------------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------------
bool defined(const OptTensor& t) { return t.has_value() && t->defined(); }
bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const OptTensor& t) { return defined(t) && t->requires_grad(); }
bool has_fw_grad(const Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }
bool has_fw_grad(const OptTensor& t) { return defined(t) && has_fw_grad(*t); }

template <typename... Ts>
bool any_requires_grad(const Ts&... ts) {
  return at::GradMode::is_enabled() && (requires_grad(ts) || ...);
}

// torch.func transforms (grad, vjp, jacrev, hessian, vmap, jvp) cannot run a C++ autograd Function, and the
// kernels have no forward-mode formula: under a transform, or with a forward-mode tangent on an input, an op runs
// its composite of differentiable ATen ops (what backend "torch" computes), which both understand. One TLS read.
template <typename... Ts>
bool needs_composite(const Ts&... ts) {
  // functorch includes its front-mode key in the thread's dispatch keys while a transform's layer is active
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
         (has_fw_grad(ts) || ...);
}

OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Positions of the forward's tensor arguments among the Function's edges (absent optionals have none).
struct EdgeIndex {
  std::array<int, 4> at{-1, -1, -1, -1};
  explicit EdgeIndex(std::initializer_list<bool> present) {
    int next = 0, i = 0;
    for (bool p : present) at[i++] = p ? next++ : -1;
  }
  bool needs(AutogradContext* ctx, int i) const { return at[i] >= 0 && ctx->needs_input_grad(at[i]); }
};

// a'(u) as differentiable ATen ops (the composites' slope).
Tensor slope(const OptTensor& u, ActParams act, const Tensor& like) {
  if (act.constant_slope() || !defined(u)) return at::scalar_tensor(act.alpha, like.options());
  const auto s = at::sigmoid(*u * act.gamma);
  return act.alpha + act.beta * act.gamma * s * (1 - s);
}

Tensor scale_of(const Tensor& log_scale) { return log_scale.exp().reshape({}); }

// a(x) as differentiable ATen ops (a layer's input activation, recomputed in the composites).
Tensor act_aten(const Tensor& x, ActParams act) {
  if (act.identity()) return x;
  if (act.constant_slope()) return x * act.alpha;
  return act.alpha * x + act.beta * at::sigmoid(x * act.gamma);
}

// The input activation's parameters as saved in a Function's context, and back.
std::vector<double> act_vec(ActParams act) { return {act.alpha, act.beta, act.gamma}; }
ActParams act_of(const c10::IValue& saved) {
  const auto v = saved.toDoubleVector();
  return {v[0], v[1], v[2]};
}

// ---------------------------------------------------------------------------------------------------------
// backward composites (differentiable ATen ops: the bwd ops' autograd when a graph of the gradient is needed)
// ---------------------------------------------------------------------------------------------------------
Tensor4 conv_backward_composite(const Tensor& grad, const Tensor& input, const Tensor& weight, const OptTensor& u,
                                const OptTensor& log_scale, IntArrayRef stride, IntArrayRef padding,
                                IntArrayRef output_padding, bool transposed, ActParams act, Mask4 mask,
                                ActParams in_act, IntArrayRef dilation, int64_t groups) {
  const bool scale_grad = mask[3] && defined(log_scale);
  Tensor du = grad * slope(u, act, grad);
  Tensor db = mask[2] ? du.sum({0, 2, 3}) : Tensor();
  if (defined(log_scale)) du = du * scale_of(*log_scale);
  const bool need_input = mask[0] || scale_grad;
  const Tensor eff = act_aten(input, in_act);
  Tensor dinput, dweight, dscale;
  if (need_input || mask[1]) {
    std::tie(dinput, dweight, std::ignore) = at::convolution_backward(
        du, eff, weight, std::nullopt, stride, padding, dilation, transposed, output_padding, groups,
        {need_input, mask[1], false});
  }
  if (need_input) dinput = dinput.contiguous(memory_format_of(input));
  if (mask[1]) dweight = dweight.contiguous(memory_format_of(weight));
  if (scale_grad) dscale = log_scale_grad(dinput, eff, *log_scale);
  if (mask[0] && !in_act.identity()) dinput = dinput * slope(input, in_act, dinput);
  return {mask[0] ? dinput : Tensor(), dweight, db, dscale};
}

Tensor4 linear_backward_composite(const Tensor& grad, const Tensor& inp, const Tensor& weight, const OptTensor& u,
                                  const OptTensor& log_scale, bool reverse, ActParams act, Mask4 mask,
                                  ActParams in_act) {
  const bool scale_grad = mask[3] && defined(log_scale);
  const int64_t n_out = grad.size(-1);
  Tensor du = (grad * slope(u, act, grad)).reshape({-1, n_out});
  Tensor db = mask[2] ? du.sum(0) : Tensor();
  if (defined(log_scale)) du = du * scale_of(*log_scale);
  const Tensor eff = act_aten(inp, in_act);
  const auto inp2 = eff.reshape({-1, inp.size(-1)});
  Tensor dinp, dweight, dscale;
  if (mask[0] || scale_grad) dinp = (reverse ? at::mm(du, weight.t()) : at::mm(du, weight)).view(inp.sizes());
  if (mask[1]) dweight = reverse ? at::mm(inp2.t(), du) : at::mm(du.t(), inp2);
  if (scale_grad) dscale = log_scale_grad(dinp, eff, *log_scale);
  if (mask[0] && !in_act.identity()) dinp = dinp * slope(inp, in_act, dinp);
  return {mask[0] ? dinp : Tensor(), dweight, db, dscale};
}

// The pre-activations, recomputed as differentiable ATen ops of the saved inputs (create_graph only).
Tensor conv_pre(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride, IntArrayRef padding,
                ActParams in_act, IntArrayRef dilation, int64_t groups) {
  return at::convolution(act_aten(x, in_act), w, b, stride, padding, dilation, false, {0, 0}, groups);
}

Tensor reverse_scaled(Tensor pre, const OptTensor& b, const OptTensor& log_scale, int64_t channel_dim) {
  if (defined(log_scale)) pre = pre * scale_of(*log_scale);
  if (!defined(b)) return pre;
  std::vector<int64_t> shape(pre.dim(), 1);
  shape[channel_dim] = -1;
  return pre + b->view(shape);
}

Tensor conv_reverse_pre(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& log_scale,
                        IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, ActParams in_act,
                        IntArrayRef dilation, int64_t groups) {
  auto pre = at::convolution(act_aten(z, in_act), w, std::nullopt, stride, padding, dilation, true, output_padding,
                             groups);
  return reverse_scaled(pre, b, log_scale, 1);
}

// The forward ops as composites of differentiable ATen ops (see needs_composite): (y, u), u the pre-activation.
Tensor2 conv_composite(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride, IntArrayRef padding,
                       ActParams act, ActParams in_act, IntArrayRef dilation, int64_t groups) {
  check_bi_conv2d(x, w, b, stride, padding, dilation, groups);
  auto u = conv_pre(x, w, b, stride, padding, in_act, dilation, groups);
  return {act_aten(u, act), u};
}

Tensor2 conv_reverse_composite(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                               IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, ActParams act,
                               ActParams in_act, IntArrayRef dilation, int64_t groups) {
  check_bi_conv2d_reverse(z, w, b, s, stride, padding, output_padding, dilation, groups);
  auto u = conv_reverse_pre(z, w, b, s, stride, padding, output_padding, in_act, dilation, groups);
  return {act_aten(u, act), u};
}

Tensor2 linear_composite(const Tensor& x, const Tensor& w, const OptTensor& b, ActParams act, ActParams in_act) {
  check_bi_linear("bi_linear", x, "x", w, b, std::nullopt, false);
  auto u = at::linear(act_aten(x, in_act), w, b);
  return {act_aten(u, act), u};
}

Tensor2 linear_reverse_composite(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                 ActParams act, ActParams in_act) {
  check_bi_linear("bi_linear_reverse", z, "z", w, b, s, true);
  auto u = reverse_scaled(at::matmul(act_aten(z, in_act), w), b, s, z.dim() - 1);
  return {act_aten(u, act), u};
}

// ---------------------------------------------------------------------------------------------------------
// gnova
// ---------------------------------------------------------------------------------------------------------
struct GnovaFn : public Function<GnovaFn> {
  static Tensor forward(AutogradContext* ctx, Impl impl, const Tensor& u, double alpha, double beta, double gamma) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({u});
    ctx->saved_data["act"] = std::vector<double>{alpha, beta, gamma};
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    return ops(impl).gnova.call(u, alpha, beta, gamma);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    const auto act = ctx->saved_data["act"].toDoubleVector();
    const auto u = ctx->get_saved_variables()[0];
    return {Tensor(), ops(impl).gnova_bwd.call(grads[0], u, act[0], act[1], act[2]), Tensor(), Tensor(), Tensor()};
  }
};

template <Impl I>
Tensor gnova_autograd(const Tensor& u, double alpha, double beta, double gamma) {
  if (needs_composite(u)) {
    check_float("gnova", u, "u");
    const ActParams act{alpha, beta, gamma};
    return act.identity() ? u.clone() : act_aten(u, act);
  }
  if (!any_requires_grad(u)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).gnova.call(u, alpha, beta, gamma);
  }
  return GnovaFn::apply(I, u, alpha, beta, gamma);
}

template <Impl I>
Tensor gnova_bwd_autograd(const Tensor& grad, const Tensor& u, double alpha, double beta, double gamma) {
  if (!needs_composite(grad, u) && !any_requires_grad(grad, u)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).gnova_bwd.call(grad, u, alpha, beta, gamma);
  }
  check_float("gnova_bwd", u, "u");
  check_grad("gnova_bwd", grad, u, u, "u", u.sizes(), {alpha, beta, gamma});
  return grad * slope(u, {alpha, beta, gamma}, grad);
}

// ---------------------------------------------------------------------------------------------------------
// bi_conv2d (forward direction)
// ---------------------------------------------------------------------------------------------------------
// Every layer Function takes the input activation (ia, ib, ig) last; what it saves is unchanged: its input
// (the previous layer's pre-activation when ia, ib, ig is not the identity), the weight, the bias and u.
template <bool kWithU>
struct BiConv2dFn : public Function<BiConv2dFn<kWithU>> {
  using Out = std::conditional_t<kWithU, variable_list, Tensor>;
  static Out forward(AutogradContext* ctx, Impl impl, const Tensor& x, const Tensor& w, const OptTensor& b,
                     IntArrayRef stride, IntArrayRef padding, double alpha, double beta, double gamma, double ia,
                     double ib, double ig, IntArrayRef dilation, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const ActParams act{alpha, beta, gamma};
    Tensor y, u;
    if (act.constant_slope() && !kWithU) {
      y = ops(impl).bi_conv2d.call(x, w, b, stride, padding, alpha, beta, gamma, ia, ib, ig, dilation, groups);
    } else {
      std::tie(y, u) =
          ops(impl).bi_conv2d_fwd.call(x, w, b, stride, padding, alpha, beta, gamma, ia, ib, ig, dilation, groups);
    }
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({x, w, b.value_or(Tensor()), act.constant_slope() ? Tensor() : u});
    ctx->saved_data["ints"] =
        std::vector<int64_t>{stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups};
    ctx->saved_data["act"] = std::vector<double>{alpha, beta, gamma};
    ctx->saved_data["in_act"] = std::vector<double>{ia, ib, ig};
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    if constexpr (kWithU) {
      ctx->mark_non_differentiable({u});
      return {y, u};
    } else {
      return y;
    }
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(14);  // one per forward argument, the family first
    if (!grads[0].defined()) return out;
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const auto a = ctx->saved_data["act"].toDoubleVector();
    const ActParams in = act_of(ctx->saved_data["in_act"]);
    const IntArrayRef stride(ints.data(), 2), padding(ints.data() + 2, 2), dilation(ints.data() + 4, 2);
    const int64_t groups = ints[6];
    const EdgeIndex edges{true, true, b.defined()};
    const Mask3 mask{edges.needs(ctx, 0), edges.needs(ctx, 1), edges.needs(ctx, 2)};
    OptTensor u = opt(saved[3]);
    if (at::GradMode::is_enabled() && u.has_value()) u = conv_pre(x, w, opt(b), stride, padding, in, dilation, groups);
    std::tie(out[1], out[2], out[3]) =
        ops(impl).bi_conv2d_bwd.call(grads[0], x, w, u, stride, padding, a[0], a[1], a[2], mask, in.alpha, in.beta,
                                     in.gamma, dilation, groups);
    return out;
  }
};

template <Impl I>
Tensor bi_conv2d_autograd(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride,
                          IntArrayRef padding, double alpha, double beta, double gamma, double ia, double ib,
                          double ig, IntArrayRef dilation, int64_t groups) {
  if (needs_composite(x, w, b)) {
    return std::get<0>(
        conv_composite(x, w, b, stride, padding, {alpha, beta, gamma}, {ia, ib, ig}, dilation, groups));
  }
  if (!any_requires_grad(x, w, b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_conv2d.call(x, w, b, stride, padding, alpha, beta, gamma, ia, ib, ig, dilation, groups);
  }
  return BiConv2dFn<false>::apply(I, x, w, b, stride, padding, alpha, beta, gamma, ia, ib, ig, dilation, groups);
}

template <Impl I>
Tensor2 bi_conv2d_fwd_autograd(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride,
                               IntArrayRef padding, double alpha, double beta, double gamma, double ia, double ib,
                               double ig, IntArrayRef dilation, int64_t groups) {
  if (needs_composite(x, w, b)) {
    return conv_composite(x, w, b, stride, padding, {alpha, beta, gamma}, {ia, ib, ig}, dilation, groups);
  }
  if (!any_requires_grad(x, w, b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_conv2d_fwd.call(x, w, b, stride, padding, alpha, beta, gamma, ia, ib, ig, dilation, groups);
  }
  auto out = BiConv2dFn<true>::apply(I, x, w, b, stride, padding, alpha, beta, gamma, ia, ib, ig, dilation, groups);
  return {out[0], out[1]};
}

template <Impl I>
Tensor3 bi_conv2d_bwd_autograd(const Tensor& grad, const Tensor& x, const Tensor& w, const OptTensor& u,
                               IntArrayRef stride, IntArrayRef padding, double alpha, double beta, double gamma,
                               Mask3 mask, double ia, double ib, double ig, IntArrayRef dilation, int64_t groups) {
  if (!needs_composite(grad, x, w, u) && !any_requires_grad(grad, x, w, u)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_conv2d_bwd.call(grad, x, w, u, stride, padding, alpha, beta, gamma, mask, ia, ib, ig, dilation,
                                     groups);
  }
  const ActParams act{alpha, beta, gamma};
  const auto out = check_bi_conv2d(x, w, std::nullopt, stride, padding, dilation, groups);
  check_grad("bi_conv2d_bwd", grad, u, x, "x", {x.size(0), w.size(0), out[0], out[1]}, act);
  auto [dx, dw, db, ds] =
      conv_backward_composite(grad, x, w, u, std::nullopt, stride, padding, {0, 0}, false, act,
                              {mask[0], mask[1], mask[2], false}, {ia, ib, ig}, dilation, groups);
  return {dx, dw, db};
}

// ---------------------------------------------------------------------------------------------------------
// bi_conv2d_reverse (reverse direction, optional reverse scale)
// ---------------------------------------------------------------------------------------------------------
template <bool kWithU>
struct BiConv2dReverseFn : public Function<BiConv2dReverseFn<kWithU>> {
  using Out = std::conditional_t<kWithU, variable_list, Tensor>;
  static Out forward(AutogradContext* ctx, Impl impl, const Tensor& z, const Tensor& w, const OptTensor& b,
                     const OptTensor& s, IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding,
                     double alpha, double beta, double gamma, double ia, double ib, double ig, IntArrayRef dilation,
                     int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const ActParams act{alpha, beta, gamma};
    Tensor y, u;
    if (act.constant_slope() && !kWithU) {
      y = ops(impl).bi_conv2d_reverse.call(z, w, b, s, stride, padding, output_padding, alpha, beta, gamma, ia, ib,
                                           ig, dilation, groups);
    } else {
      std::tie(y, u) = ops(impl).bi_conv2d_reverse_fwd.call(z, w, b, s, stride, padding, output_padding, alpha, beta,
                                                            gamma, ia, ib, ig, dilation, groups);
    }
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({z, w, b.value_or(Tensor()), s.value_or(Tensor()), act.constant_slope() ? Tensor() : u});
    ctx->saved_data["ints"] = std::vector<int64_t>{stride[0],         stride[1],         padding[0],  padding[1],
                                                   output_padding[0], output_padding[1], dilation[0], dilation[1],
                                                   groups};
    ctx->saved_data["act"] = std::vector<double>{alpha, beta, gamma};
    ctx->saved_data["in_act"] = std::vector<double>{ia, ib, ig};
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    if constexpr (kWithU) {
      ctx->mark_non_differentiable({u});
      return {y, u};
    } else {
      return y;
    }
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(16);  // one per forward argument, the family first
    if (!grads[0].defined()) return out;
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    const auto saved = ctx->get_saved_variables();
    const Tensor &z = saved[0], &w = saved[1], &b = saved[2], &s = saved[3];
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const auto a = ctx->saved_data["act"].toDoubleVector();
    const ActParams in = act_of(ctx->saved_data["in_act"]);
    const IntArrayRef stride(ints.data(), 2), padding(ints.data() + 2, 2), output_padding(ints.data() + 4, 2),
        dilation(ints.data() + 6, 2);
    const int64_t groups = ints[8];
    const EdgeIndex edges{true, true, b.defined(), s.defined()};
    const Mask4 mask{edges.needs(ctx, 0), edges.needs(ctx, 1), edges.needs(ctx, 2), edges.needs(ctx, 3)};
    OptTensor u = opt(saved[4]);
    if (at::GradMode::is_enabled() && u.has_value()) {
      u = conv_reverse_pre(z, w, opt(b), opt(s), stride, padding, output_padding, in, dilation, groups);
    }
    std::tie(out[1], out[2], out[3], out[4]) = ops(impl).bi_conv2d_reverse_bwd.call(
        grads[0], z, w, u, opt(s), stride, padding, output_padding, a[0], a[1], a[2], mask, in.alpha, in.beta,
        in.gamma, dilation, groups);
    return out;
  }
};

template <Impl I>
Tensor bi_conv2d_reverse_autograd(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                  IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, double alpha,
                                  double beta, double gamma, double ia, double ib, double ig, IntArrayRef dilation,
                                  int64_t groups) {
  if (needs_composite(z, w, b, s)) {
    return std::get<0>(conv_reverse_composite(z, w, b, s, stride, padding, output_padding, {alpha, beta, gamma},
                                              {ia, ib, ig}, dilation, groups));
  }
  if (!any_requires_grad(z, w, b, s)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_conv2d_reverse.call(z, w, b, s, stride, padding, output_padding, alpha, beta, gamma, ia, ib,
                                         ig, dilation, groups);
  }
  return BiConv2dReverseFn<false>::apply(I, z, w, b, s, stride, padding, output_padding, alpha, beta, gamma, ia, ib,
                                         ig, dilation, groups);
}

template <Impl I>
Tensor2 bi_conv2d_reverse_fwd_autograd(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                       IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding,
                                       double alpha, double beta, double gamma, double ia, double ib, double ig,
                                       IntArrayRef dilation, int64_t groups) {
  if (needs_composite(z, w, b, s)) {
    return conv_reverse_composite(z, w, b, s, stride, padding, output_padding, {alpha, beta, gamma}, {ia, ib, ig},
                                  dilation, groups);
  }
  if (!any_requires_grad(z, w, b, s)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_conv2d_reverse_fwd.call(z, w, b, s, stride, padding, output_padding, alpha, beta, gamma, ia,
                                             ib, ig, dilation, groups);
  }
  auto out = BiConv2dReverseFn<true>::apply(I, z, w, b, s, stride, padding, output_padding, alpha, beta, gamma, ia,
                                            ib, ig, dilation, groups);
  return {out[0], out[1]};
}

template <Impl I>
Tensor4 bi_conv2d_reverse_bwd_autograd(const Tensor& grad, const Tensor& z, const Tensor& w, const OptTensor& u,
                                       const OptTensor& s, IntArrayRef stride, IntArrayRef padding,
                                       IntArrayRef output_padding, double alpha, double beta, double gamma,
                                       Mask4 mask, double ia, double ib, double ig, IntArrayRef dilation,
                                       int64_t groups) {
  if (!needs_composite(grad, z, w, u, s) && !any_requires_grad(grad, z, w, u, s)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_conv2d_reverse_bwd.call(grad, z, w, u, s, stride, padding, output_padding, alpha, beta, gamma,
                                             mask, ia, ib, ig, dilation, groups);
  }
  const ActParams act{alpha, beta, gamma};
  const auto out = check_bi_conv2d_reverse(z, w, std::nullopt, s, stride, padding, output_padding, dilation, groups);
  check_grad("bi_conv2d_reverse_bwd", grad, u, z, "z", {z.size(0), w.size(1) * groups, out[0], out[1]}, act);
  return conv_backward_composite(grad, z, w, u, s, stride, padding, output_padding, true, act, mask, {ia, ib, ig},
                                 dilation, groups);
}

// ---------------------------------------------------------------------------------------------------------
// bi_linear (forward direction) and bi_linear_reverse (reverse direction, optional reverse scale)
// ---------------------------------------------------------------------------------------------------------
template <bool kWithU>
struct BiLinearFn : public Function<BiLinearFn<kWithU>> {
  using Out = std::conditional_t<kWithU, variable_list, Tensor>;
  static Out forward(AutogradContext* ctx, Impl impl, const Tensor& x, const Tensor& w, const OptTensor& b,
                     double alpha, double beta, double gamma, double ia, double ib, double ig) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const ActParams act{alpha, beta, gamma};
    Tensor y, u;
    if (act.constant_slope() && !kWithU) {
      y = ops(impl).bi_linear.call(x, w, b, alpha, beta, gamma, ia, ib, ig);
    } else {
      std::tie(y, u) = ops(impl).bi_linear_fwd.call(x, w, b, alpha, beta, gamma, ia, ib, ig);
    }
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({x, w, b.value_or(Tensor()), act.constant_slope() ? Tensor() : u});
    ctx->saved_data["act"] = std::vector<double>{alpha, beta, gamma};
    ctx->saved_data["in_act"] = std::vector<double>{ia, ib, ig};
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    if constexpr (kWithU) {
      ctx->mark_non_differentiable({u});
      return {y, u};
    } else {
      return y;
    }
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(10);  // one per forward argument, the family first
    if (!grads[0].defined()) return out;
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    const auto a = ctx->saved_data["act"].toDoubleVector();
    const ActParams in = act_of(ctx->saved_data["in_act"]);
    const EdgeIndex edges{true, true, b.defined()};
    const Mask3 mask{edges.needs(ctx, 0), edges.needs(ctx, 1), edges.needs(ctx, 2)};
    OptTensor u = opt(saved[3]);
    if (at::GradMode::is_enabled() && u.has_value()) u = at::linear(act_aten(x, in), w, opt(b));
    std::tie(out[1], out[2], out[3]) =
        ops(impl).bi_linear_bwd.call(grads[0], x, w, u, a[0], a[1], a[2], mask, in.alpha, in.beta, in.gamma);
    return out;
  }
};

template <Impl I>
Tensor bi_linear_autograd(const Tensor& x, const Tensor& w, const OptTensor& b, double alpha, double beta,
                          double gamma, double ia, double ib, double ig) {
  if (needs_composite(x, w, b)) return std::get<0>(linear_composite(x, w, b, {alpha, beta, gamma}, {ia, ib, ig}));
  if (!any_requires_grad(x, w, b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_linear.call(x, w, b, alpha, beta, gamma, ia, ib, ig);
  }
  return BiLinearFn<false>::apply(I, x, w, b, alpha, beta, gamma, ia, ib, ig);
}

template <Impl I>
Tensor2 bi_linear_fwd_autograd(const Tensor& x, const Tensor& w, const OptTensor& b, double alpha, double beta,
                               double gamma, double ia, double ib, double ig) {
  if (needs_composite(x, w, b)) return linear_composite(x, w, b, {alpha, beta, gamma}, {ia, ib, ig});
  if (!any_requires_grad(x, w, b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_linear_fwd.call(x, w, b, alpha, beta, gamma, ia, ib, ig);
  }
  auto out = BiLinearFn<true>::apply(I, x, w, b, alpha, beta, gamma, ia, ib, ig);
  return {out[0], out[1]};
}

template <Impl I>
Tensor3 bi_linear_bwd_autograd(const Tensor& grad, const Tensor& x, const Tensor& w, const OptTensor& u,
                               double alpha, double beta, double gamma, Mask3 mask, double ia, double ib, double ig) {
  if (!needs_composite(grad, x, w, u) && !any_requires_grad(grad, x, w, u)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_linear_bwd.call(grad, x, w, u, alpha, beta, gamma, mask, ia, ib, ig);
  }
  const ActParams act{alpha, beta, gamma};
  check_bi_linear("bi_linear_bwd", x, "x", w, std::nullopt, std::nullopt, false);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = w.size(0);
  check_grad("bi_linear_bwd", grad, u, x, "x", out_sizes, act);
  auto [dx, dw, db, ds] = linear_backward_composite(grad, x, w, u, std::nullopt, false, act,
                                                    {mask[0], mask[1], mask[2], false}, {ia, ib, ig});
  return {dx, dw, db};
}

template <bool kWithU>
struct BiLinearReverseFn : public Function<BiLinearReverseFn<kWithU>> {
  using Out = std::conditional_t<kWithU, variable_list, Tensor>;
  static Out forward(AutogradContext* ctx, Impl impl, const Tensor& z, const Tensor& w, const OptTensor& b,
                     const OptTensor& s, double alpha, double beta, double gamma, double ia, double ib, double ig) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const ActParams act{alpha, beta, gamma};
    Tensor y, u;
    if (act.constant_slope() && !kWithU) {
      y = ops(impl).bi_linear_reverse.call(z, w, b, s, alpha, beta, gamma, ia, ib, ig);
    } else {
      std::tie(y, u) = ops(impl).bi_linear_reverse_fwd.call(z, w, b, s, alpha, beta, gamma, ia, ib, ig);
    }
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({z, w, b.value_or(Tensor()), s.value_or(Tensor()), act.constant_slope() ? Tensor() : u});
    ctx->saved_data["act"] = std::vector<double>{alpha, beta, gamma};
    ctx->saved_data["in_act"] = std::vector<double>{ia, ib, ig};
    ctx->saved_data["impl"] = static_cast<int64_t>(impl);
    if constexpr (kWithU) {
      ctx->mark_non_differentiable({u});
      return {y, u};
    } else {
      return y;
    }
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(11);  // one per forward argument, the family first
    if (!grads[0].defined()) return out;
    const auto impl = static_cast<Impl>(ctx->saved_data["impl"].toInt());
    const auto saved = ctx->get_saved_variables();
    const Tensor &z = saved[0], &w = saved[1], &b = saved[2], &s = saved[3];
    const auto a = ctx->saved_data["act"].toDoubleVector();
    const ActParams in = act_of(ctx->saved_data["in_act"]);
    const EdgeIndex edges{true, true, b.defined(), s.defined()};
    const Mask4 mask{edges.needs(ctx, 0), edges.needs(ctx, 1), edges.needs(ctx, 2), edges.needs(ctx, 3)};
    OptTensor u = opt(saved[4]);
    if (at::GradMode::is_enabled() && u.has_value()) {
      u = reverse_scaled(at::matmul(act_aten(z, in), w), opt(b), opt(s), z.dim() - 1);
    }
    std::tie(out[1], out[2], out[3], out[4]) = ops(impl).bi_linear_reverse_bwd.call(
        grads[0], z, w, u, opt(s), a[0], a[1], a[2], mask, in.alpha, in.beta, in.gamma);
    return out;
  }
};

template <Impl I>
Tensor bi_linear_reverse_autograd(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                  double alpha, double beta, double gamma, double ia, double ib, double ig) {
  if (needs_composite(z, w, b, s)) {
    return std::get<0>(linear_reverse_composite(z, w, b, s, {alpha, beta, gamma}, {ia, ib, ig}));
  }
  if (!any_requires_grad(z, w, b, s)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_linear_reverse.call(z, w, b, s, alpha, beta, gamma, ia, ib, ig);
  }
  return BiLinearReverseFn<false>::apply(I, z, w, b, s, alpha, beta, gamma, ia, ib, ig);
}

template <Impl I>
Tensor2 bi_linear_reverse_fwd_autograd(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                       double alpha, double beta, double gamma, double ia, double ib, double ig) {
  if (needs_composite(z, w, b, s)) return linear_reverse_composite(z, w, b, s, {alpha, beta, gamma}, {ia, ib, ig});
  if (!any_requires_grad(z, w, b, s)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_linear_reverse_fwd.call(z, w, b, s, alpha, beta, gamma, ia, ib, ig);
  }
  auto out = BiLinearReverseFn<true>::apply(I, z, w, b, s, alpha, beta, gamma, ia, ib, ig);
  return {out[0], out[1]};
}

template <Impl I>
Tensor4 bi_linear_reverse_bwd_autograd(const Tensor& grad, const Tensor& z, const Tensor& w, const OptTensor& u,
                                       const OptTensor& s, double alpha, double beta, double gamma, Mask4 mask,
                                       double ia, double ib, double ig) {
  if (!needs_composite(grad, z, w, u, s) && !any_requires_grad(grad, z, w, u, s)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops(I).bi_linear_reverse_bwd.call(grad, z, w, u, s, alpha, beta, gamma, mask, ia, ib, ig);
  }
  const ActParams act{alpha, beta, gamma};
  check_bi_linear("bi_linear_reverse_bwd", z, "z", w, std::nullopt, s, true);
  auto out_sizes = z.sizes().vec();
  out_sizes.back() = w.size(1);
  check_grad("bi_linear_reverse_bwd", grad, u, z, "z", out_sizes, act);
  return linear_backward_composite(grad, z, w, u, s, true, act, mask, {ia, ib, ig});
}

// ---------------------------------------------------------------------------------------------------------
// autocast: floating inputs to the autocast dtype (float64 and the reverse scale untouched), then redispatch
// ---------------------------------------------------------------------------------------------------------
template <c10::DeviceType D>
struct Autocast {
  c10::impl::ExcludeDispatchKeyGuard no_autocast{at::autocast::get_autocast_dispatch_key_from_device_type(D)};
  at::ScalarType dtype = at::autocast::get_autocast_dtype(D);
  Tensor operator()(const Tensor& t) const { return at::autocast::cached_cast(dtype, t, D); }
  OptTensor operator()(const OptTensor& t) const { return at::autocast::cached_cast(dtype, t, D); }
};

template <Impl I, c10::DeviceType D>
struct AutocastOps {
  static Tensor bi_conv2d(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride,
                          IntArrayRef padding, double a, double be, double g, double ia, double ib, double ig,
                          IntArrayRef dilation, int64_t groups) {
    Autocast<D> cast;
    return ops(I).bi_conv2d.call(cast(x), cast(w), cast(b), stride, padding, a, be, g, ia, ib, ig, dilation, groups);
  }
  static Tensor2 bi_conv2d_fwd(const Tensor& x, const Tensor& w, const OptTensor& b, IntArrayRef stride,
                               IntArrayRef padding, double a, double be, double g, double ia, double ib, double ig,
                               IntArrayRef dilation, int64_t groups) {
    Autocast<D> cast;
    return ops(I).bi_conv2d_fwd.call(cast(x), cast(w), cast(b), stride, padding, a, be, g, ia, ib, ig, dilation,
                                     groups);
  }
  static Tensor bi_conv2d_reverse(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                  IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, double a,
                                  double be, double g, double ia, double ib, double ig, IntArrayRef dilation,
                                  int64_t groups) {
    Autocast<D> cast;
    return ops(I).bi_conv2d_reverse.call(cast(z), cast(w), cast(b), s, stride, padding, output_padding, a, be, g, ia,
                                         ib, ig, dilation, groups);
  }
  static Tensor2 bi_conv2d_reverse_fwd(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                       IntArrayRef stride, IntArrayRef padding, IntArrayRef output_padding, double a,
                                       double be, double g, double ia, double ib, double ig, IntArrayRef dilation,
                                       int64_t groups) {
    Autocast<D> cast;
    return ops(I).bi_conv2d_reverse_fwd.call(cast(z), cast(w), cast(b), s, stride, padding, output_padding, a, be,
                                             g, ia, ib, ig, dilation, groups);
  }
  static Tensor bi_linear(const Tensor& x, const Tensor& w, const OptTensor& b, double a, double be, double g,
                          double ia, double ib, double ig) {
    Autocast<D> cast;
    return ops(I).bi_linear.call(cast(x), cast(w), cast(b), a, be, g, ia, ib, ig);
  }
  static Tensor2 bi_linear_fwd(const Tensor& x, const Tensor& w, const OptTensor& b, double a, double be, double g,
                               double ia, double ib, double ig) {
    Autocast<D> cast;
    return ops(I).bi_linear_fwd.call(cast(x), cast(w), cast(b), a, be, g, ia, ib, ig);
  }
  static Tensor bi_linear_reverse(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s, double a,
                                  double be, double g, double ia, double ib, double ig) {
    Autocast<D> cast;
    return ops(I).bi_linear_reverse.call(cast(z), cast(w), cast(b), s, a, be, g, ia, ib, ig);
  }
  static Tensor2 bi_linear_reverse_fwd(const Tensor& z, const Tensor& w, const OptTensor& b, const OptTensor& s,
                                       double a, double be, double g, double ia, double ib, double ig) {
    Autocast<D> cast;
    return ops(I).bi_linear_reverse_fwd.call(cast(z), cast(w), cast(b), s, a, be, g, ia, ib, ig);
  }

  static void register_all(torch::Library& m, const std::string& prefix) {
    m.impl((prefix + "bi_conv2d").c_str(), &bi_conv2d);
    m.impl((prefix + "bi_conv2d_fwd").c_str(), &bi_conv2d_fwd);
    m.impl((prefix + "bi_conv2d_reverse").c_str(), &bi_conv2d_reverse);
    m.impl((prefix + "bi_conv2d_reverse_fwd").c_str(), &bi_conv2d_reverse_fwd);
    m.impl((prefix + "bi_linear").c_str(), &bi_linear);
    m.impl((prefix + "bi_linear_fwd").c_str(), &bi_linear_fwd);
    m.impl((prefix + "bi_linear_reverse").c_str(), &bi_linear_reverse);
    m.impl((prefix + "bi_linear_reverse_fwd").c_str(), &bi_linear_reverse_fwd);
  }
};

template <Impl I>
void register_autograd(torch::Library& m, const std::string& prefix) {
  m.impl((prefix + "gnova").c_str(), &gnova_autograd<I>);
  m.impl((prefix + "gnova_bwd").c_str(), &gnova_bwd_autograd<I>);
  m.impl((prefix + "bi_conv2d").c_str(), &bi_conv2d_autograd<I>);
  m.impl((prefix + "bi_conv2d_fwd").c_str(), &bi_conv2d_fwd_autograd<I>);
  m.impl((prefix + "bi_conv2d_bwd").c_str(), &bi_conv2d_bwd_autograd<I>);
  m.impl((prefix + "bi_conv2d_reverse").c_str(), &bi_conv2d_reverse_autograd<I>);
  m.impl((prefix + "bi_conv2d_reverse_fwd").c_str(), &bi_conv2d_reverse_fwd_autograd<I>);
  m.impl((prefix + "bi_conv2d_reverse_bwd").c_str(), &bi_conv2d_reverse_bwd_autograd<I>);
  m.impl((prefix + "bi_linear").c_str(), &bi_linear_autograd<I>);
  m.impl((prefix + "bi_linear_fwd").c_str(), &bi_linear_fwd_autograd<I>);
  m.impl((prefix + "bi_linear_bwd").c_str(), &bi_linear_bwd_autograd<I>);
  m.impl((prefix + "bi_linear_reverse").c_str(), &bi_linear_reverse_autograd<I>);
  m.impl((prefix + "bi_linear_reverse_fwd").c_str(), &bi_linear_reverse_fwd_autograd<I>);
  m.impl((prefix + "bi_linear_reverse_bwd").c_str(), &bi_linear_reverse_bwd_autograd<I>);
}

}  // namespace

TORCH_LIBRARY_IMPL(bvae, Autograd, m) {
  register_autograd<Impl::kCompiled>(m, "");
  register_autograd<Impl::kTriton>(m, "triton_");
}

TORCH_LIBRARY_IMPL(bvae, AutocastCPU, m) {
  AutocastOps<Impl::kCompiled, c10::DeviceType::CPU>::register_all(m, "");
  AutocastOps<Impl::kTriton, c10::DeviceType::CPU>::register_all(m, "triton_");
}

TORCH_LIBRARY_IMPL(bvae, AutocastCUDA, m) {
  AutocastOps<Impl::kCompiled, c10::DeviceType::CUDA>::register_all(m, "");
  AutocastOps<Impl::kTriton, c10::DeviceType::CUDA>::register_all(m, "triton_");
}

}  // namespace bvae

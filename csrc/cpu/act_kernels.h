// The CPU backend's two fused passes (csrc/bvae.h: BiasActFn, ActBackwardFn), written once and compiled per
// CPU capability (DEFAULT, AVX2): the including .cpp defines CPU_CAPABILITY, which puts ATen's Vectorized<T>
// (and these kernels) in a namespace of its own, as ATen does for its own kernels. bvae_ops.cpp picks a
// capability at run time.
//
// Tiny tensors (a BVAE's late layers, batch 1) run inline: at::parallel_for only forks when a range exceeds its
// grain, and nothing here allocates beyond the outputs (plus one [C]-sized partial buffer for a bias gradient).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../bvae.h"

namespace bvae {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

constexpr int64_t kBlock = 256;         // elements converted to opmath at a time
constexpr int64_t kGrainElems = 32768;  // minimum elements per parallel task
constexpr int64_t kRowsPerChunk = 256;  // fixed row chunk of the bias-gradient reduction (deterministic)

// y = a(u) for n contiguous opmath values (y may be u). alpha == 0 skips the linear term so that
// sigmoid(-inf) = 0 instead of 0 * -inf = NaN. sigmoid via 1 / (1 + exp(-g u)) is exact at the ends: exp
// overflow gives 1 / inf = 0, never NaN.
template <typename acc_t>
inline void act_values(const acc_t* u, acc_t* y, int64_t n, const ActParams& p) {
  using Vec = Vectorized<acc_t>;
  const acc_t alpha = p.alpha, beta = p.beta, gamma = p.gamma;
  const Vec va(alpha), vb(beta), vng(-gamma), one(acc_t(1));
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec x = Vec::loadu(u + i);
    Vec out = beta != 0 ? vb * (one / (one + (vng * x).exp())) : Vec(acc_t(0));
    if (alpha != 0) out = out + va * x;
    out.store(y + i);
  }
  for (; i < n; ++i) {
    acc_t out = beta != 0 ? beta / (acc_t(1) + std::exp(-gamma * u[i])) : acc_t(0);
    if (alpha != 0) out += alpha * u[i];
    y[i] = out;
  }
}

// du = g * a'(u), a'(u) = alpha + beta * gamma * s * (1 - s), for n contiguous opmath values. With
// beta * gamma == 0 the slope is alpha and u is never read (it may be null).
template <typename acc_t>
inline void act_grad_values(const acc_t* g, const acc_t* u, acc_t* du, int64_t n, const ActParams& p) {
  using Vec = Vectorized<acc_t>;
  const acc_t alpha = p.alpha, bg = p.beta * p.gamma, gamma = p.gamma;
  const Vec va(alpha), vbg(bg), vng(-gamma), one(acc_t(1));
  int64_t i = 0;
  if (bg == 0) {
    for (; i + Vec::size() <= n; i += Vec::size()) (Vec::loadu(g + i) * va).store(du + i);
    for (; i < n; ++i) du[i] = g[i] * alpha;
    return;
  }
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec x = Vec::loadu(u + i);
    Vec s = one / (one + (vng * x).exp());
    (Vec::loadu(g + i) * (va + vbg * s * (one - s))).store(du + i);
  }
  for (; i < n; ++i) {
    acc_t s = acc_t(1) / (acc_t(1) + std::exp(-gamma * u[i]));
    du[i] = g[i] * (alpha + bg * s * (acc_t(1) - s));
  }
}

// The per-run settings of bias_act: u = scale * z + bias (bias: per-element vector or one scalar), written
// back over z when write_u, and y = a(u) (y may be z).
template <typename scalar_t>
struct RunArgs {
  const scalar_t* bias_vec;
  const scalar_t* bias_scalar;
  at::opmath_type<scalar_t> scale;
  bool has_scale;
  bool write_u;
  ActParams act;
};

// One contiguous run of n elements. For reduced types u is rounded before a(u), so that y matches the u that
// the backward will see.
template <typename scalar_t>
void bias_act_run(scalar_t* z, scalar_t* y, int64_t n, const RunArgs<scalar_t>& r) {
  using acc_t = at::opmath_type<scalar_t>;
  const bool affine = r.bias_vec || r.bias_scalar || r.has_scale;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (!affine) {
      act_values<acc_t>(z, y, n, r.act);  // z read only
      return;
    }
    // u is needed in memory for the vectorized pass: in z when it is kept or overwritten by y anyway.
    scalar_t* u = (r.write_u || y == z) ? z : y;
    const acc_t b = r.bias_scalar ? *r.bias_scalar : acc_t(0);
    for (int64_t i = 0; i < n; ++i) {
      acc_t v = r.has_scale ? z[i] * r.scale : z[i];
      u[i] = v + (r.bias_vec ? r.bias_vec[i] : b);
    }
    act_values<acc_t>(u, y, n, r.act);
  } else {
    acc_t ubuf[kBlock], ybuf[kBlock];
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t len = std::min(kBlock, n - start);
      for (int64_t i = 0; i < len; ++i) {
        acc_t v = static_cast<acc_t>(z[start + i]);
        if (affine) {
          if (r.has_scale) v *= r.scale;
          if (r.bias_vec) v += static_cast<acc_t>(r.bias_vec[start + i]);
          if (r.bias_scalar) v += static_cast<acc_t>(*r.bias_scalar);
          const scalar_t rounded = static_cast<scalar_t>(v);
          if (r.write_u) z[start + i] = rounded;
          v = static_cast<acc_t>(rounded);
        }
        ubuf[i] = v;
      }
      act_values<acc_t>(ubuf, ybuf, len, r.act);
      for (int64_t i = 0; i < len; ++i) y[start + i] = static_cast<scalar_t>(ybuf[i]);
    }
  }
}

// One contiguous run: d = g * a'(u) (u may be null for a constant slope); `acc_scalar` (one sum) or `acc_vec`
// (elementwise, length n) accumulate d as rounded to scalar_t (like the reference's sum of the rounded du);
// du stores d * scale (rounded) when has_scale, else d.
template <typename scalar_t>
void act_backward_run(const scalar_t* g, const scalar_t* u, scalar_t* du, int64_t n, const ActParams& p,
                      at::opmath_type<scalar_t> scale, bool has_scale, at::opmath_type<scalar_t>* acc_scalar,
                      at::opmath_type<scalar_t>* acc_vec) {
  using acc_t = at::opmath_type<scalar_t>;
  const bool constant = p.beta * p.gamma == 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (!acc_scalar && !acc_vec && !has_scale) {  // the plain elementwise pass, straight into du
      act_grad_values<acc_t>(g, constant ? nullptr : u, du, n, p);
      return;
    }
  }
  acc_t gbuf[kBlock], ubuf[kBlock], dbuf[kBlock];
  acc_t sum = 0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    const acc_t* gp;
    const acc_t* up = nullptr;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      gp = g + start;
      if (!constant) up = u + start;
    } else {
      for (int64_t i = 0; i < len; ++i) gbuf[i] = static_cast<acc_t>(g[start + i]);
      if (!constant) {
        for (int64_t i = 0; i < len; ++i) ubuf[i] = static_cast<acc_t>(u[start + i]);
        up = ubuf;
      }
      gp = gbuf;
    }
    act_grad_values<acc_t>(gp, up, dbuf, len, p);
    for (int64_t i = 0; i < len; ++i) {
      const acc_t d = static_cast<acc_t>(static_cast<scalar_t>(dbuf[i]));
      if (acc_scalar) sum += d;
      if (acc_vec) acc_vec[start + i] += d;
      du[start + i] = static_cast<scalar_t>(has_scale ? d * scale : d);
    }
  }
  if (acc_scalar) *acc_scalar += sum;
}

template <typename acc_t>
acc_t scale_value(const OptTensor& log_scale) {
  if (!log_scale.has_value() || !log_scale->defined()) return acc_t(1);
  return static_cast<acc_t>(std::exp(log_scale->item<double>()));
}

std::tuple<Tensor, Tensor> bias_act_cpu(Tensor z, const BiasActArgs& args) {
  z = to_kernel_layout(z);
  const bool affine = (args.bias.has_value() && args.bias->defined()) ||
                      (args.log_scale.has_value() && args.log_scale->defined());
  const bool in_place = args.in_place && !args.keep_u;
  TORCH_CHECK(args.in_place || (!affine && !args.keep_u), "bvae: internal error: a read-only input needs a new y");
  Tensor y = in_place ? z : at::empty_like(z);
  if (z.numel() == 0) return {y, args.keep_u ? z : Tensor()};
  const auto view = layout_of(z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "bvae_bias_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* z_ptr = z.data_ptr<scalar_t>();
    scalar_t* y_ptr = y.data_ptr<scalar_t>();
    const Tensor bias = args.bias.has_value() && args.bias->defined() ? args.bias->contiguous() : Tensor();
    const scalar_t* b_ptr = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    const bool has_scale = args.log_scale.has_value() && args.log_scale->defined();
    const RunArgs<scalar_t> base{nullptr, nullptr, scale_value<acc_t>(args.log_scale), has_scale, args.keep_u,
                                 args.act};
    if (!b_ptr) {
      at::parallel_for(0, z.numel(), kGrainElems, [&](int64_t begin, int64_t end) {
        bias_act_run<scalar_t>(z_ptr + begin, y_ptr + begin, end - begin, base);
      });
    } else if (view.layout == ChannelLayout::kChannelOuter) {
      const int64_t rows = view.outer * view.channels, len = view.inner, c = view.channels;
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(len, 1)),
                       [&](int64_t begin, int64_t end) {
                         RunArgs<scalar_t> r = base;
                         for (int64_t row = begin; row < end; ++row) {
                           r.bias_scalar = b_ptr + row % c;
                           bias_act_run<scalar_t>(z_ptr + row * len, y_ptr + row * len, len, r);
                         }
                       });
    } else {
      const int64_t rows = view.outer, len = view.channels;
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(len, 1)),
                       [&](int64_t begin, int64_t end) {
                         RunArgs<scalar_t> r = base;
                         r.bias_vec = b_ptr;
                         for (int64_t row = begin; row < end; ++row)
                           bias_act_run<scalar_t>(z_ptr + row * len, y_ptr + row * len, len, r);
                       });
    }
  });
  return {y, args.keep_u ? z : Tensor()};
}

std::tuple<Tensor, Tensor> act_backward_cpu(const Tensor& grad, const OptTensor& u_in, ActParams act,
                                            const OptTensor& log_scale, bool bias_grad) {
  // The layout comes from u; without u (a constant slope) from grad.
  const bool constant = act.constant_slope();
  TORCH_CHECK(constant || (u_in.has_value() && u_in->defined()), "bvae: internal error: u is missing");
  const Tensor u = constant ? to_kernel_layout(grad) : to_kernel_layout(*u_in);
  const Tensor g = constant ? u : grad.contiguous(memory_format_of(u));
  auto du = at::empty_like(u);
  const auto view = layout_of(u);
  Tensor db;
  if (bias_grad) db = at::empty({view.channels}, u.options());
  if (u.numel() == 0) {
    if (bias_grad) db.zero_();
    return {du, db};
  }
  const bool has_scale = log_scale.has_value() && log_scale->defined();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, u.scalar_type(), "bvae_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g_ptr = g.data_ptr<scalar_t>();
    const scalar_t* u_ptr = constant ? nullptr : u.data_ptr<scalar_t>();
    scalar_t* du_ptr = du.data_ptr<scalar_t>();
    const acc_t scale = scale_value<acc_t>(log_scale);
    auto at_row = [&](const scalar_t* p, int64_t offset) { return p ? p + offset : nullptr; };
    if (!bias_grad) {
      at::parallel_for(0, u.numel(), kGrainElems, [&](int64_t begin, int64_t end) {
        act_backward_run<scalar_t>(g_ptr + begin, at_row(u_ptr, begin), du_ptr + begin, end - begin, act, scale,
                                   has_scale, nullptr, nullptr);
      });
      return;
    }
    const int64_t c = view.channels;
    auto* db_ptr = db.data_ptr<scalar_t>();
    if (view.layout == ChannelLayout::kChannelOuter) {
      // One partial sum per (n, c) row, then a fixed-order sum over n: deterministic for any thread count.
      const int64_t rows = view.outer * c, len = view.inner;
      std::vector<acc_t> row_sums(rows, acc_t(0));
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(len, 1)),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r)
                           act_backward_run<scalar_t>(g_ptr + r * len, at_row(u_ptr, r * len), du_ptr + r * len, len,
                                                      act, scale, has_scale, &row_sums[r], nullptr);
                       });
      for (int64_t ch = 0; ch < c; ++ch) {
        acc_t s = 0;
        for (int64_t n = 0; n < view.outer; ++n) s += row_sums[n * c + ch];
        db_ptr[ch] = static_cast<scalar_t>(s);
      }
    } else {
      // Fixed chunks of rows, one [C] partial each, then a fixed-order sum over chunks.
      const int64_t rows = view.outer;
      const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
      std::vector<acc_t> partial(chunks * c, acc_t(0));
      at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t r_end = std::min(rows, (k + 1) * kRowsPerChunk);
          for (int64_t r = k * kRowsPerChunk; r < r_end; ++r)
            act_backward_run<scalar_t>(g_ptr + r * c, at_row(u_ptr, r * c), du_ptr + r * c, c, act, scale,
                                       has_scale, nullptr, partial.data() + k * c);
        }
      });
      for (int64_t ch = 0; ch < c; ++ch) {
        acc_t s = 0;
        for (int64_t k = 0; k < chunks; ++k) s += partial[k * c + ch];
        db_ptr[ch] = static_cast<scalar_t>(s);
      }
    }
  });
  return {du, db};
}

}  // namespace CPU_CAPABILITY
}  // namespace bvae

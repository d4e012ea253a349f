// The CUDA kernels of csrc/cuda/act_kernels.cu, run on the host through tests/cuda_emu/cuda_emu.h, against a
// float64 reference of the same rounded inputs: every launcher path (flat with 16-byte packs, a tail, a misaligned
// view and fewer elements than a pack; channel-outer rows for a block or a warp, in packs or not, inner == 1;
// channel-inner with C a multiple of the pack or not, several row chunks). Each output starts as NaN and has
// sentinels past its end: an element left unwritten (a tail or chunk bound one short) or written past the end (one
// long) fails, as does a wrong value. Built and run by tests/test_cuda_sources.py (exit 0: all passed).
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <vector>

#include "act_kernels.cuh"

using bvae::gpu::ActLayout;
using bvae::gpu::ActShape;

static int failures = 0;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double next_uniform() {  // in [-1, 1)
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return double(rng_state >> 11) / double(1ull << 52) - 1.0;
}

static void fail(const char* what, const char* name, long long i, double got, double want) {
  if (failures++ < 20) std::printf("FAIL %s %s [%lld]: got %.9g, want %.9g\n", what, name, i, got, want);
}

// A T buffer of n elements starting `offset` elements past a 16-byte boundary, filled with NaN (an element a kernel
// leaves unwritten stays NaN), then kPad sentinels of a finite value that no kernel writes (a write one past the
// end changes one; a NaN sentinel would hide a(NaN) = NaN written over it).
template <typename T>
struct Buffer {
  static constexpr int kPad = 8;
  static constexpr double kSentinel = 1234.5;
  std::vector<unsigned char> raw;
  T* data;
  long long n;
  Buffer(long long n_, int offset) : raw((n_ + kPad + offset) * sizeof(T) + 16), n(n_) {
    const uintptr_t base = (reinterpret_cast<uintptr_t>(raw.data()) + 15) & ~uintptr_t(15);
    data = reinterpret_cast<T*>(base) + offset;
    for (long long i = 0; i < n; ++i) data[i] = std::numeric_limits<T>::quiet_NaN();
    for (long long i = n; i < n + kPad; ++i) data[i] = T(kSentinel);
  }
  bool sentinels_intact() const {
    for (int i = 0; i < kPad; ++i)
      if (!(double(data[n + i]) == kSentinel)) return false;
    return true;
  }
};

static double act(double u, double a, double b, double g) { return a * u + b / (1.0 + std::exp(-g * u)); }
static double dact(double u, double a, double b, double g) {
  const double s = 1.0 / (1.0 + std::exp(-g * u));
  return a + b * g * s * (1.0 - s);
}

static long long channel_of(const ActShape& s, long long e) {
  return s.layout == ActLayout::kChannelOuter ? (e / s.inner) % s.channels : e % s.channels;
}

static void expect_close(const char* what, const char* name, long long i, double got, double want, double tol) {
  if (std::isnan(got) || !(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) fail(what, name, i, got, want);
}

template <typename T>
static void check_case(const char* name, ActShape shape, bool bias, int offset) {
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  const double a = 0.25, b = 2.0, g = 3.5;
  const long long total = shape.outer * shape.channels * shape.inner;
  Buffer<T> u(total, offset), y(total, offset), grad(total, offset), du(total, offset);
  Buffer<T> bias_buf(shape.channels, 0), db(shape.channels, 0);
  std::vector<double> u_in(total);
  for (long long i = 0; i < total; ++i) {
    u.data[i] = T(2.0 * next_uniform());
    u_in[i] = double(u.data[i]);
    grad.data[i] = T(next_uniform());
  }
  for (long long c = 0; c < shape.channels; ++c) bias_buf.data[c] = T(next_uniform());

  // forward: u = round(u + bias) in place, y = a(u)
  cudaError_t err = bvae::gpu::bias_act_launch<T>(u.data, y.data, bias ? bias_buf.data : nullptr, shape, a, b, g,
                                                  nullptr);
  if (err != cudaSuccess) fail("bias_act error", name, 0, err, 0);
  for (long long i = 0; i < total; ++i) {
    const double u_ref = bias ? double(T(u_in[i] + double(bias_buf.data[channel_of(shape, i)]))) : u_in[i];
    expect_close("u", name, i, double(u.data[i]), u_ref, tol);
    expect_close("y", name, i, double(y.data[i]), act(u_ref, a, b, g), tol);
  }
  if (!u.sentinels_intact() || !y.sentinels_intact()) fail("bias_act wrote past the end", name, total, 0, 0);

  // backward: du = grad * a'(u), db[c] = sum of du over all but the channel
  const long long ws_bytes = bvae::gpu::act_backward_workspace_bytes<T>(shape, bias);
  std::vector<double> workspace(ws_bytes / sizeof(double) + 2);
  err = bvae::gpu::act_backward_launch<T>(grad.data, u.data, du.data, bias ? db.data : nullptr, workspace.data(),
                                          shape, a, b, g, nullptr);
  if (err != cudaSuccess) fail("act_backward error", name, 0, err, 0);
  std::vector<double> db_ref(shape.channels, 0.0), db_abs(shape.channels, 0.0);
  for (long long i = 0; i < total; ++i) {
    const double want = double(grad.data[i]) * dact(double(u.data[i]), a, b, g);
    expect_close("du", name, i, double(du.data[i]), want, tol);
    db_ref[channel_of(shape, i)] += want;
    db_abs[channel_of(shape, i)] += std::fabs(want);
  }
  if (!du.sentinels_intact()) fail("act_backward wrote past the end of du", name, total, 0, 0);
  if (bias) {
    for (long long c = 0; c < shape.channels; ++c) {
      const double got = double(db.data[c]);
      if (std::isnan(got) || std::fabs(got - db_ref[c]) > tol * (1.0 + db_abs[c])) fail("db", name, c, got, db_ref[c]);
    }
    if (!db.sentinels_intact()) fail("act_backward wrote past the end of db", name, shape.channels, 0, 0);
  }
}

template <typename T>
static void check_all(const char* type) {
  char name[160];
  struct Case {
    ActLayout layout;
    long long outer, channels, inner;
    bool bias;
    int offset;
    const char* what;
  };
  const Case cases[] = {
      {ActLayout::kFlat, 1, 1, 4096, false, 0, "flat, packs"},
      {ActLayout::kFlat, 1, 1, 1003, false, 0, "flat, packs and a tail"},
      {ActLayout::kFlat, 1, 1, 1000, false, 1, "flat, misaligned view"},
      {ActLayout::kFlat, 1, 1, 3, false, 0, "flat, fewer elements than a pack"},
      {ActLayout::kChannelOuter, 2, 3, 1156, true, 0, "NCHW, block rows (34x34), packs"},
      {ActLayout::kChannelOuter, 3, 5, 81, true, 0, "NCHW, warp rows (9x9), no packs"},
      {ActLayout::kChannelOuter, 2, 5, 8, true, 1, "NCHW, misaligned"},
      {ActLayout::kChannelOuter, 2, 3, 6, true, 0, "NCHW, rows of 6 (half a float pack)"},
      {ActLayout::kChannelOuter, 4, 6, 1, true, 0, "NCHW with 1x1 spatial (inner == 1)"},
      {ActLayout::kChannelInner, 200, 8, 1, true, 0, "NHWC, C % pack == 0, 4 chunks"},
      {ActLayout::kChannelInner, 130, 3, 1, true, 0, "NHWC, C = 3, 3 chunks"},
      {ActLayout::kChannelInner, 50, 6, 1, true, 0, "NHWC, C = 6 (half a float pack)"},
      {ActLayout::kChannelInner, 70, 37, 1, true, 0, "NHWC, C past one 32-channel tile"},
  };
  for (const Case& c : cases) {
    std::snprintf(name, sizeof(name), "%s: %s [%lld][%lld][%lld]", type, c.what, c.outer, c.channels, c.inner);
    check_case<T>(name, ActShape{c.layout, c.outer, c.channels, c.inner}, c.bias, c.offset);
  }
}

int main() {
  check_all<float>("float");
  check_all<double>("double");
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("cuda kernels in host emulation: all checks passed\n");
  return 0;
}

// Counter-based random numbers: Philox4x64-10 (Salmon et al., SC'11), the same
// algorithm as numpy.random.Philox, so the NumPy reference can check raw bits.
//
// A stream is keyed by (seed, stream id) and addressed by a 4x64 counter. fcmlc
// uses counter = (block, realization, grid point, purpose): every value drawn for
// a given (seed, grid point, realization) is a pure function of those numbers,
// so results do not depend on thread count, chunking, resume or worker count.
#pragma once

#include <cmath>
#include <cstdint>

namespace fcmlc {

struct Philox4x64 {
  using u64 = std::uint64_t;
  struct Block {
    u64 v[4];
  };

  static inline void mulhilo(u64 a, u64 b, u64& hi, u64& lo) {
    __uint128_t p = static_cast<__uint128_t>(a) * b;
    hi = static_cast<u64>(p >> 64);
    lo = static_cast<u64>(p);
  }

  // One Philox4x64-10 evaluation of counter c under key k.
  static inline Block eval(const u64 c[4], const u64 k[2]) {
    constexpr u64 M0 = 0xD2E7470EE14C6C93ULL, M1 = 0xCA5A826395121157ULL;
    constexpr u64 W0 = 0x9E3779B97F4A7C15ULL, W1 = 0xBB67AE8584CAA73BULL;
    u64 x0 = c[0], x1 = c[1], x2 = c[2], x3 = c[3];
    u64 k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; ++r) {
      u64 hi0, lo0, hi1, lo1;
      mulhilo(M0, x0, hi0, lo0);
      mulhilo(M1, x2, hi1, lo1);
      u64 y0 = hi1 ^ x1 ^ k0;
      u64 y1 = lo1;
      u64 y2 = hi0 ^ x3 ^ k1;
      u64 y3 = lo0;
      x0 = y0; x1 = y1; x2 = y2; x3 = y3;
      k0 += W0;
      k1 += W1;
    }
    return Block{{x0, x1, x2, x3}};
  }

  // Two independent evaluations, interleaved so that their multiply chains overlap
  // (same results as two calls of eval).
  static inline void eval2(const u64 a[4], const u64 b[4], const u64 k[2], Block& ra, Block& rb) {
    constexpr u64 M0 = 0xD2E7470EE14C6C93ULL, M1 = 0xCA5A826395121157ULL;
    constexpr u64 W0 = 0x9E3779B97F4A7C15ULL, W1 = 0xBB67AE8584CAA73BULL;
    u64 x0 = a[0], x1 = a[1], x2 = a[2], x3 = a[3];
    u64 z0 = b[0], z1 = b[1], z2 = b[2], z3 = b[3];
    u64 k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; ++r) {
      u64 hi0, lo0, hi1, lo1, gi0, go0, gi1, go1;
      mulhilo(M0, x0, hi0, lo0);
      mulhilo(M1, x2, hi1, lo1);
      mulhilo(M0, z0, gi0, go0);
      mulhilo(M1, z2, gi1, go1);
      const u64 y0 = hi1 ^ x1 ^ k0, y2 = hi0 ^ x3 ^ k1;
      const u64 v0 = gi1 ^ z1 ^ k0, v2 = gi0 ^ z3 ^ k1;
      x0 = y0; x1 = lo1; x2 = y2; x3 = lo0;
      z0 = v0; z1 = go1; z2 = v2; z3 = go0;
      k0 += W0;
      k1 += W1;
    }
    ra = Block{{x0, x1, x2, x3}};
    rb = Block{{z0, z1, z2, z3}};
  }
};

// Purposes (the 4th counter word) keep independent draws for the same point apart.
enum Purpose : std::uint64_t {
  PURPOSE_RESIDUAL = 1,  // correlated Gaussian residuals
  PURPOSE_PULL = 2,      // pull parameters
  PURPOSE_STAT = 3,      // statistical fluctuation of pull-type experiments
  PURPOSE_FC_TOY = 4,    // Feldman-Cousins pseudo-experiments (whitened residuals)
  PURPOSE_NORM = 5,      // normalisation-group draws w ~ N(0, I_k) (only when norm_prior > 0)
};

// Uniform in (0, 1): 53 random bits, centred so that 0 and 1 never occur.
inline double u01(std::uint64_t x) { return (static_cast<double>(x >> 11) + 0.5) * 0x1.0p-53; }

// Ziggurat tables for N(0, 1) (Marsaglia and Tsang, J. Stat. Softw. 5 (2000), 256 layers,
// 52-bit uniforms), computed once from the recurrence of the paper:
//   x_255 = r, x_{i-1} = sqrt(-2 ln(v / x_i + f(x_i))), f(x) = exp(-x^2/2),
//   w_i = x_i / 2^52, k_i = floor(2^52 x_{i-1} / x_i), f_i = f(x_i); layer 0 is the base
//   strip of width q = v / f(r) (k_0 = 2^52 r / q) with the tail beyond r.
struct ZigguratTables {
  static constexpr double R = 3.6541528853610088;
  static constexpr double V = 4.92867323399e-3;
  std::uint64_t k[256];
  double w[256];
  double f[256];
  ZigguratTables() {
    const double m = 0x1.0p52;
    double dn = R, tn = R;
    const double q = V / std::exp(-0.5 * dn * dn);
    k[0] = static_cast<std::uint64_t>((dn / q) * m);
    k[1] = 0;
    w[0] = q / m;
    w[255] = dn / m;
    f[0] = 1.0;
    f[255] = std::exp(-0.5 * dn * dn);
    for (int i = 254; i >= 1; --i) {
      dn = std::sqrt(-2.0 * std::log(V / dn + std::exp(-0.5 * dn * dn)));
      k[i + 1] = static_cast<std::uint64_t>((dn / tn) * m);
      tn = dn;
      f[i] = std::exp(-0.5 * dn * dn);
      w[i] = dn / m;
    }
  }
  static const ZigguratTables& get() {
    static const ZigguratTables t;
    return t;
  }
};

// Bit flag in the 4th counter word of the extra words a rejected ziggurat draw uses.
constexpr std::uint64_t ZIGGURAT_EXTRA = 1ULL << 63;

// Fills out[0..n) with independent N(0,1) values of the stream (key = {seed, stream},
// counter = {block, c1, c2, c3}) by the ziggurat method: value i starts from word i
// (block i/4, lane i%4). Its rare rejections (~1.2%) continue with the words of the
// counters {i * 2^20 + j, c1, c2, c3 | 2^63}, j = 0, 1, ..., so every value is a pure
// function of (seed, stream, c1, c2, c3, i).
namespace detail {

// The ziggurat's rare path for value i (word r was rejected by its rectangle test):
// wedge and tail tests, then fresh words from the extra counters, until accepted.
[[gnu::noinline]] inline double ziggurat_slow(std::uint64_t r, std::uint64_t i, const std::uint64_t key[2],
                                              std::uint64_t c1, std::uint64_t c2, std::uint64_t c3) {
  const ZigguratTables& T = ZigguratTables::get();
  std::uint64_t extra_block = i << 20;
  Philox4x64::Block e{};
  int e_used = 4;
  auto next = [&]() -> std::uint64_t {
    if (e_used == 4) {
      const std::uint64_t ectr[4] = {extra_block++, c1, c2, c3 | ZIGGURAT_EXTRA};
      e = Philox4x64::eval(ectr, key);
      e_used = 0;
    }
    return e.v[e_used++];
  };
  bool first = true;
  for (;;) {
    const int idx = static_cast<int>(r & 0xff);
    const bool negative = (r >> 8) & 1;
    const std::uint64_t rabs = (r >> 9) & 0x000fffffffffffffULL;
    double x = static_cast<double>(static_cast<std::int64_t>(rabs)) * T.w[idx];
    if (negative) x = -x;
    if (!first && rabs < T.k[idx]) return x;
    first = false;
    if (idx == 0) {  // the tail beyond r
      double xx, yy;
      do {
        xx = -std::log(u01(next())) / ZigguratTables::R;
        yy = -std::log(u01(next()));
      } while (yy + yy <= xx * xx);
      return negative ? -(ZigguratTables::R + xx) : ZigguratTables::R + xx;
    }
    if (T.f[idx] + u01(next()) * (T.f[idx - 1] - T.f[idx]) < std::exp(-0.5 * x * x)) return x;  // wedge
    r = next();
  }
}

}  // namespace detail

// Fills out[0..n) with independent N(0,1) values of the stream (key = {seed, stream},
// counter = {block, c1, c2, c3}) by the ziggurat method: value i starts from word i
// (block i/4, lane i%4): 8 bits pick the layer, 1 bit the sign, 52 bits the abscissa.
// Its rare rejections (~1.2%) continue with the words of the counters
// {i * 2^20 + j, c1, c2, c3 | 2^63}, j = 0, 1, ..., so every value is a pure function of
// (seed, stream, c1, c2, c3, i).
inline void normals(std::uint64_t seed, std::uint64_t stream, std::uint64_t c1, std::uint64_t c2,
                    std::uint64_t c3, double* out, std::size_t n) {
  const ZigguratTables& T = ZigguratTables::get();
  const std::uint64_t key[2] = {seed, stream};
  auto fast = [&](std::uint64_t r, std::size_t i) {
    const int idx = static_cast<int>(r & 0xff);
    const std::uint64_t rabs = (r >> 9) & 0x000fffffffffffffULL;
    const double x = static_cast<double>(static_cast<std::int64_t>(rabs)) * T.w[idx];
    if (__builtin_expect(rabs < T.k[idx], 1)) {  // inside the layer's rectangle (~98.8%)
      out[i] = ((r >> 8) & 1) ? -x : x;
    } else {
      out[i] = detail::ziggurat_slow(r, i, key, c1, c2, c3);
    }
  };
  std::size_t base = 0;
  for (; base + 8 <= n; base += 8) {
    const std::uint64_t ca[4] = {static_cast<std::uint64_t>(base / 4), c1, c2, c3};
    const std::uint64_t cb[4] = {static_cast<std::uint64_t>(base / 4 + 1), c1, c2, c3};
    Philox4x64::Block ba, bb;
    Philox4x64::eval2(ca, cb, key, ba, bb);
    for (int lane = 0; lane < 4; ++lane) fast(ba.v[lane], base + lane);
    for (int lane = 0; lane < 4; ++lane) fast(bb.v[lane], base + 4 + lane);
  }
  for (; base < n; base += 4) {
    const std::uint64_t ctr[4] = {static_cast<std::uint64_t>(base / 4), c1, c2, c3};
    const Philox4x64::Block b = Philox4x64::eval(ctr, key);
    const std::size_t m = n - base < 4 ? n - base : 4;
    for (std::size_t lane = 0; lane < m; ++lane) fast(b.v[lane], base + lane);
  }
}

}  // namespace fcmlc

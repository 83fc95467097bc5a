// Kernel: exact grid evaluation of a 2-D conditional rational-quadratic spline flow and the
// FCMLC transition matrix. See fcmlc/transition.hpp for the method.
#include "fcmlc/transition.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "fcmlc/common.hpp"

namespace fcmlc {

namespace {

using idx = std::ptrdiff_t;

constexpr double NaN = std::numeric_limits<double>::quiet_NaN();
constexpr double LOG_2PI = 1.8378770664093454835606594728112;
constexpr int MAX_BINS = 128;

// torch.nn.functional.softplus (beta 1, threshold 20) and torch.sigmoid.
inline double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Knot positions cum[0..K] on [-B, B] from K unnormalised sizes (normflows splines.py:
// softmax, minimum size, cumulative sum, end knots set to -B and B exactly).
inline void knots(const double* u, int K, double B, double min_size, double* cum) {
  double mx = u[0];
  for (int i = 1; i < K; ++i) mx = std::max(mx, u[i]);
  double e[MAX_BINS];
  double s = 0.0;
  for (int i = 0; i < K; ++i) {
    e[i] = std::exp(u[i] - mx);
    s += e[i];
  }
  const double a = 1.0 - min_size * K;
  double c = 0.0;
  cum[0] = -B;
  for (int i = 0; i + 1 < K; ++i) {
    c += min_size + a * (e[i] / s);
    cum[i + 1] = 2.0 * B * c - B;
  }
  cum[K] = B;
}

// ---- per-pair splines, eight pairs per pack ------------------------------------------------
//
// The pairs of a row are processed eight at a time, one pair per lane, as packs of two 4-wide
// registers (GCC vector extensions: SSE2 pairs in the baseline clone, ymm registers in the AVX2
// clone). Every operation on a pack is issued for both halves, so the two halves' long dependency
// chains (softmax, cumulative knots, logarithms) overlap. FMA is not enabled, so both clones
// perform the same IEEE operations and give bit-identical results; every lane runs the same
// operations, so a pair's result does not depend on its neighbours or on padding.

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FCMLC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FCMLC_CLONES
#endif
#define FCMLC_AI inline __attribute__((always_inline))

typedef double v4d __attribute__((vector_size(4 * sizeof(double)), aligned(sizeof(double))));
typedef long long v4i __attribute__((vector_size(4 * sizeof(long long)), aligned(sizeof(long long))));

constexpr int NV = 2;          // 4-wide registers per pack
constexpr int LANES = 4 * NV;  // pairs per pack

struct VD {  // LANES doubles
  v4d r[NV];
  double operator[](int l) const { return r[l >> 2][l & 3]; }
  void set(int l, double v) { r[l >> 2][l & 3] = v; }
};
struct VI {  // LANES 64-bit integers or comparison masks (-1 true, 0 false)
  v4i r[NV];
  long long operator[](int l) const { return r[l >> 2][l & 3]; }
};

FCMLC_AI VD vset(double a) {
  VD c;
  for (int q = 0; q < NV; ++q) c.r[q] = v4d{a, a, a, a};
  return c;
}
FCMLC_AI VI iset(long long a) {
  VI c;
  for (int q = 0; q < NV; ++q) c.r[q] = v4i{a, a, a, a};
  return c;
}
#define FCMLC_VD_OP(op)                                                          \
  FCMLC_AI VD operator op(VD a, VD b) {                                          \
    for (int q = 0; q < NV; ++q) a.r[q] = a.r[q] op b.r[q];                      \
    return a;                                                                    \
  }                                                                              \
  FCMLC_AI VD operator op(VD a, double b) {                                      \
    for (int q = 0; q < NV; ++q) a.r[q] = a.r[q] op b;                           \
    return a;                                                                    \
  }                                                                              \
  FCMLC_AI VD operator op(double a, VD b) {                                      \
    for (int q = 0; q < NV; ++q) b.r[q] = a op b.r[q];                           \
    return b;                                                                    \
  }                                                                              \
  FCMLC_AI VD& operator op##=(VD & a, VD b) { return a = a op b; }
FCMLC_VD_OP(+)
FCMLC_VD_OP(-)
FCMLC_VD_OP(*)
FCMLC_VD_OP(/)
#define FCMLC_VD_CMP(op)                                                         \
  FCMLC_AI VI operator op(VD a, VD b) {                                          \
    VI c;                                                                        \
    for (int q = 0; q < NV; ++q) c.r[q] = a.r[q] op b.r[q];                      \
    return c;                                                                    \
  }                                                                              \
  FCMLC_AI VI operator op(VD a, double b) { return a op vset(b); }
FCMLC_VD_CMP(<)
FCMLC_VD_CMP(>)
FCMLC_VD_CMP(>=)
FCMLC_VD_CMP(<=)
#define FCMLC_VI_OP(op)                                                          \
  FCMLC_AI VI operator op(VI a, VI b) {                                          \
    for (int q = 0; q < NV; ++q) a.r[q] = a.r[q] op b.r[q];                      \
    return a;                                                                    \
  }                                                                              \
  FCMLC_AI VI operator op(VI a, long long b) {                                   \
    for (int q = 0; q < NV; ++q) a.r[q] = a.r[q] op b;                           \
    return a;                                                                    \
  }
FCMLC_VI_OP(+)
FCMLC_VI_OP(-)
FCMLC_VI_OP(&)
FCMLC_VI_OP(|)
FCMLC_VI_OP(<<)
FCMLC_VI_OP(==)
FCMLC_VI_OP(<)
FCMLC_VI_OP(>)
FCMLC_VI_OP(>>)

FCMLC_AI VD vsel(VI m, VD a, VD b) {
  for (int q = 0; q < NV; ++q) a.r[q] = m.r[q] ? a.r[q] : b.r[q];
  return a;
}
FCMLC_AI VI isel(VI m, VI a, VI b) {
  for (int q = 0; q < NV; ++q) a.r[q] = m.r[q] ? a.r[q] : b.r[q];
  return a;
}
FCMLC_AI VI as_int(VD a) {
  VI c;
  for (int q = 0; q < NV; ++q) c.r[q] = (v4i)a.r[q];  // same-size vector cast: the bits
  return c;
}
FCMLC_AI VD as_double(VI a) {
  VD c;
  for (int q = 0; q < NV; ++q) c.r[q] = (v4d)a.r[q];
  return c;
}
FCMLC_AI bool all_of(VI m) {
  long long a = -1;
  for (int l = 0; l < LANES; ++l) a &= m[l];
  return a != 0;
}

// exp(x) for x <= 0 (and NaN): x = n ln2 + r, |r| <= ln2/2 (Cody-Waite with a 32-bit ln2_hi, so
// n ln2_hi is exact without FMA), degree-13 Taylor polynomial (truncation < 5e-18) by Estrin's
// scheme (short dependency chains), times 2^n. About 1 ulp; below -708, where exp(x) < 3.3e-308
// would be subnormal, it returns 0 (the values exponentiated here are softmax terms relative to
// the largest, which is 1, and arguments of log1p: absolute changes below 3.3e-308).
FCMLC_AI VD vexp_nonpos(VD x) {
  const VI tiny = x < -708.0;
  x = vsel(tiny, vset(-708.0), x);
  const double magic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const VD t = x * 1.4426950408889634 + magic;
  const VD n = t - magic;
  VD r = x - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  const VD r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  const VD a0 = 1.0 + r, a1 = 0.5 + r * (1.0 / 6.0), a2 = (1.0 / 24.0) + r * (1.0 / 120.0),
           a3 = (1.0 / 720.0) + r * (1.0 / 5040.0), a4 = (1.0 / 40320.0) + r * (1.0 / 362880.0),
           a5 = (1.0 / 3628800.0) + r * (1.0 / 39916800.0), a6 = (1.0 / 479001600.0) + r * (1.0 / 6227020800.0);
  const VD b0 = a0 + r2 * a1, b1 = a2 + r2 * a3, b2 = a4 + r2 * a5;
  const VD p = (b0 + r4 * b1) + r8 * (b2 + r4 * a6);
  const VI scale = (as_int(t) - (0x4338000000000000LL - 1023)) << 52;  // 2^n, n >= -1022
  return vsel(tiny, vset(0.0), p * as_double(scale));
}

// log(x) for positive normal x (fdlibm's e_log.c: x = 2^k m, m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh(f / (2 + f)) by its degree-14 polynomial; < 1 ulp). Other lanes (zero,
// negative, subnormal, inf, NaN) are computed by std::log.
FCMLC_AI VD vlog(VD x) {
  const VI bits = as_int(x);
  VI e = (bits >> 52) - 1023;
  VD m = as_double((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
  const VI big = m > 1.41421356237309504880;
  m = vsel(big, m * 0.5, m);
  e = e - big;
  const VD k = as_double(e + 0x4338000000000000LL) - 6755399441055744.0;
  const VD f = m - 1.0;
  const VD hfsq = 0.5 * f * f;
  const VD s = f / (2.0 + f);
  const VD z = s * s, w = z * z;
  const VD t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
  const VD t2 = z * (6.666666666666735130e-01 +
                     w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
  const VD R = t2 + t1;
  VD out = k * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + R) + k * 1.90821492927058770002e-10)) - f);
  const VI ok = (x >= 2.2250738585072014e-308) & (x <= 1.7976931348623157e308);
  if (!all_of(ok))
    for (int l = 0; l < LANES; ++l)
      if (!ok[l]) out.set(l, std::log(x[l]));
  return out;
}

// log1p(e) for e in [0, 1] (NaN passes): log(u) - ((u - 1) - e) / u with u = 1 + e.
FCMLC_AI VD vlog1p_unit(VD e) {
  const VD u = 1.0 + e;
  return vlog(u) - ((u - 1.0) - e) / u;
}

// torch's softplus: x above 20 unchanged, else log1p(exp(x)) = max(x, 0) + log1p(exp(-|x|)).
FCMLC_AI VD vsoftplus(VD x) {
  const VI neg = x < 0.0;
  const VD sp = vsel(neg, vset(0.0), x) + vlog1p_unit(vexp_nonpos(vsel(neg, x, 0.0 - x)));
  return vsel(x > 20.0, x, sp);
}

// Knots cum[0..K] of K unnormalised sizes per lane (as knots() above, with 1/sum multiplied).
FCMLC_AI void vknots(const VD* u, int K, double B, double min_size, VD* cum) {
  VD mx = u[0];
  for (int i = 1; i < K; ++i) mx = vsel(mx > u[i], mx, u[i]);
  VD e[MAX_BINS];
  VD s = vset(0.0);
  for (int i = 0; i < K; ++i) {
    e[i] = vexp_nonpos(u[i] - mx);
    s += e[i];
  }
  const VD inv = 1.0 / s;
  const double a = 1.0 - min_size * K;
  VD c = vset(0.0);
  cum[0] = vset(-B);
  for (int i = 0; i + 1 < K; ++i) {
    c += min_size + a * (e[i] * inv);
    cum[i + 1] = 2.0 * B * c - B;
  }
  cum[K] = vset(B);
}

// The bin of x: the number of knots cum[0..K-1] <= x, minus one (normflows' searchsorted, whose
// +1e-6 on the last knot keeps x = B in the last bin), clamped so that NaN knots stay in range.
FCMLC_AI VI clamp_bin(VI j, int K) {
  j = isel(j < 0LL, iset(0), j);
  return isel(j > static_cast<long long>(K - 1), iset(K - 1), j);
}

// The rational-quadratic map in bin j (normflows' rational_quadratic_spline, forward) and
// log|dy/dx| = log(dnum / den^2) (one logarithm; where that ratio is not a normal number, per lane
// log(dnum) - 2 log(den) as normflows writes it).
FCMLC_AI VD vrq(VD x, VD cwj, VD wj, VD chj, VD hj, VD dj, VD dj1, VD& ld) {
  const VD iw = 1.0 / wj;
  const VD delta = hj * iw;
  const VD th = (x - cwj) * iw;
  const VD t1 = th * (1.0 - th);
  const VD num = hj * (delta * (th * th) + dj * t1);
  const VD den = delta + ((dj + dj1 - 2.0 * delta) * t1);
  const VD omt = 1.0 - th;
  const VD dnum = (delta * delta) * (dj1 * (th * th) + 2.0 * delta * t1 + dj * (omt * omt));
  const VD iden = 1.0 / den;
  const VD r = dnum * (iden * iden);
  VD l = vlog(r);
  const VI ok = (r >= 2.2250738585072014e-308) & (r <= 1.7976931348623157e308);
  if (!all_of(ok))
    for (int q = 0; q < LANES; ++q)
      if (!ok[q]) l.set(q, std::log(dnum[q]) - 2.0 * std::log(den[q]));
  ld = l;
  return chj + num * iden;
}

struct SplineConsts {
  int K = 0;
  double B = 0, mbw = 0, mbh = 0, md = 0, bc = 0;
  const double* fcw = nullptr;  // the fixed spline: knots and derivatives (K + 1 each)
  const double* fch = nullptr;
  const double* fd = nullptr;
};

// Conditional spline of x with per-lane parameters u (3K-1 packs); adds log|dy/dx| to ld.
// KC: the number of bins when known at compile time (0: sc.K).
template <int KC>
FCMLC_AI VD vspline_cond(const SplineConsts& sc, VD x, const VD* u, VD& ld) {
  const int K = KC > 0 ? KC : sc.K;
  const VI inside = (x >= -sc.B) & (x <= sc.B);  // linear tails outside (identity)
  const VD xi = vsel(inside, x, vset(0.0));
  VD cw[MAX_BINS + 1], ch[MAX_BINS + 1];
  vknots(u, K, sc.B, sc.mbw, cw);
  vknots(u + K, K, sc.B, sc.mbh, ch);
  VI j = iset(-1);
  for (int i = 0; i < K; ++i) j = j + (xi >= cw[i]);  // a true comparison is -1
  j = clamp_bin(iset(-2) - j, K);
  // derivative parameters at knots j and j+1: the boundary constant at knots 0 and K
  VD cwj = cw[0], cwj1 = cw[1], chj = ch[0], chj1 = ch[1];
  VD rj = vset(sc.bc), rj1 = K > 1 ? u[2 * K] : vset(sc.bc);
  for (int i = 1; i < K; ++i) {
    const VI m = j == static_cast<long long>(i);
    cwj = vsel(m, cw[i], cwj), cwj1 = vsel(m, cw[i + 1], cwj1);
    chj = vsel(m, ch[i], chj), chj1 = vsel(m, ch[i + 1], chj1);
    rj = vsel(m, u[2 * K + i - 1], rj);
    rj1 = vsel(m, i + 1 < K ? u[2 * K + i] : vset(sc.bc), rj1);
  }
  const VD dj = sc.md + vsoftplus(rj), dj1 = sc.md + vsoftplus(rj1);
  VD l;
  const VD y = vrq(xi, cwj, cwj1 - cwj, chj, chj1 - chj, dj, dj1, l);
  ld += vsel(inside, l, vset(0.0));
  return vsel(inside, y, x);
}

// The fixed spline (knots precomputed).
template <int KC>
FCMLC_AI VD vspline_fixed(const SplineConsts& sc, VD x, VD& ld) {
  const int K = KC > 0 ? KC : sc.K;
  const VI inside = (x >= -sc.B) & (x <= sc.B);
  const VD xi = vsel(inside, x, vset(0.0));
  VI j = iset(-1);
  for (int i = 0; i < K; ++i) j = j + (xi >= sc.fcw[i]);
  j = clamp_bin(iset(-2) - j, K);
  VD cwj = vset(sc.fcw[0]), cwj1 = vset(sc.fcw[1]), chj = vset(sc.fch[0]), chj1 = vset(sc.fch[1]);
  VD dj = vset(sc.fd[0]), dj1 = vset(sc.fd[1]);
  for (int i = 1; i < K; ++i) {
    const VI m = j == static_cast<long long>(i);
    cwj = vsel(m, vset(sc.fcw[i]), cwj), cwj1 = vsel(m, vset(sc.fcw[i + 1]), cwj1);
    chj = vsel(m, vset(sc.fch[i]), chj), chj1 = vsel(m, vset(sc.fch[i + 1]), chj1);
    dj = vsel(m, vset(sc.fd[i]), dj), dj1 = vsel(m, vset(sc.fd[i + 1]), dj1);
  }
  VD l;
  const VD y = vrq(xi, cwj, cwj1 - cwj, chj, chj1 - chj, dj, dj1, l);
  ld += vsel(inside, l, vset(0.0));
  return vsel(inside, y, x);
}

// A layer ready for evaluation: weights transposed to (in x out) so that matrix-vector
// products run over contiguous outputs; the fixed spline's knots computed once.
struct Prepared {
  bool is_spline = false;
  LuLayer lu;
  int cond = 0, H = 0, nb = 0, K = 0, NP = 0;
  double B = 0, mbw = 0, mbh = 0, md = 0, bc = 0;  // bc: the boundary derivatives' raw value
  const RqsLayer* src = nullptr;
  std::vector<double> w0t, w1t, woutt;
  std::vector<double> fcw, fch, fd;  // fixed spline: knots and derivatives (K + 1 each)
};

std::vector<double> transpose(const double* w, idx rows, idx cols) {
  std::vector<double> t(static_cast<std::size_t>(rows * cols));
  for (idx r = 0; r < rows; ++r)
    for (idx c = 0; c < cols; ++c) t[c * rows + r] = w[r * cols + c];
  return t;
}

std::vector<Prepared> prepare(const RqsFlowSpec& spec) {
  std::vector<Prepared> out;
  for (const FlowLayer& fl : spec.layers) {
    Prepared p;
    p.is_spline = fl.is_spline;
    p.lu = fl.lu;
    if (fl.is_spline) {
      const RqsLayer& L = fl.rqs;
      p.src = &L;
      p.cond = L.cond, p.H = L.hidden, p.nb = L.n_blocks, p.K = L.n_bins, p.NP = 3 * L.n_bins - 1;
      p.B = L.tail_bound, p.mbw = L.min_bin_width, p.mbh = L.min_bin_height, p.md = L.min_derivative;
      p.bc = std::log(std::exp(1.0 - p.md) - 1.0);
      const idx H = p.H;
      p.w0t.resize(static_cast<std::size_t>(p.nb * H * H));
      p.w1t.resize(p.w0t.size());
      for (int b = 0; b < p.nb; ++b) {
        auto t0 = transpose(L.w0 + b * H * H, H, H), t1 = transpose(L.w1 + b * H * H, H, H);
        std::copy(t0.begin(), t0.end(), p.w0t.begin() + b * H * H);
        std::copy(t1.begin(), t1.end(), p.w1t.begin() + b * H * H);
      }
      p.woutt = transpose(L.w_out, p.NP, H);
      const int K = p.K;
      p.fcw.resize(K + 1), p.fch.resize(K + 1), p.fd.resize(K + 1);
      knots(L.fixed, K, p.B, p.mbw, p.fcw.data());
      knots(L.fixed + K, K, p.B, p.mbh, p.fch.data());
      for (int i = 0; i <= K; ++i) p.fd[i] = p.md + softplus(i == 0 || i == K ? p.bc : L.fixed[2 * K + i - 1]);
    }
    out.push_back(std::move(p));
  }
  return out;
}

// Per-thread scratch.
struct Work {
  std::vector<double> z0, z1;
  std::vector<double> g, gate, cand;
  std::vector<double> P, Hm, U, P2, H2, U2;  // points, hidden state and block pre-activations
  std::vector<std::pair<idx, double>> ins;
  std::vector<double> O, S;                  // network output at the points, slopes per piece
  std::vector<int> first;                    // piece lookup: first candidate piece per bucket
};

// Y[p] = b + W relu?(X[p]) for np points; Wt is W transposed (in x out). A ReLU output of zero
// contributes nothing and is skipped; NaN inputs propagate.
FCMLC_CLONES void affine_rows(const double* X, idx np, int in, const double* Wt, const double* b, int out, bool relu,
                              double* Y) {
  constexpr int CH = 32;  // outputs per pass, accumulated in eight 4-wide registers
  for (idx p = 0; p < np; ++p) {
    double* y = Y + p * out;
    const double* x = X + p * in;
    int i0 = 0;
    for (; i0 + CH <= out; i0 += CH) {
      v4d acc[CH / 4];
      for (int q = 0; q < CH / 4; ++q) std::memcpy(&acc[q], b + i0 + 4 * q, sizeof(v4d));
      for (int j = 0; j < in; ++j) {
        const double v = x[j];
        if (relu ? v <= 0.0 : v == 0.0) continue;
        const double* w = Wt + static_cast<idx>(j) * out + i0;
        for (int q = 0; q < CH / 4; ++q) {
          v4d wq;
          std::memcpy(&wq, w + 4 * q, sizeof(v4d));
          acc[q] += v * wq;
        }
      }
      for (int q = 0; q < CH / 4; ++q) std::memcpy(y + i0 + 4 * q, &acc[q], sizeof(v4d));
    }
    if (i0 < out) {
      for (int i = i0; i < out; ++i) y[i] = b[i];
      for (int j = 0; j < in; ++j) {
        const double v = x[j];
        if (relu ? v <= 0.0 : v == 0.0) continue;
        const double* w = Wt + static_cast<idx>(j) * out;
        for (int i = i0; i < out; ++i) y[i] += v * w[i];
      }
    }
  }
}

// Inserts between consecutive points P the zero crossings of every column of `key` (np x H)
// that changes sign strictly over the piece; `key` is affine on each piece, and so are the
// arrays `a` and (if given) `b` (np x H; `key` may be one of them: it is read before they are
// rebuilt in a2, b2 and swapped in), which are interpolated there.
void insert_crossings(std::vector<double>& P, const double* key, std::vector<double>& a, std::vector<double>* b,
                      int H, Work& w, std::vector<double>& a2, std::vector<double>& b2) {
  const idx np = static_cast<idx>(P.size());
  w.ins.clear();
  for (idx s = 0; s + 1 < np; ++s) {
    const double* ka = key + s * H;
    const double* kb = ka + H;
    for (int j = 0; j < H; ++j) {
      const double va = ka[j], vb = kb[j];
      if ((va < 0.0 && vb > 0.0) || (va > 0.0 && vb < 0.0)) w.ins.emplace_back(s, va / (va - vb));
    }
  }
  if (w.ins.empty()) return;
  std::sort(w.ins.begin(), w.ins.end());
  w.P2.clear(), a2.clear();
  if (b) b2.clear();
  const std::size_t n2 = static_cast<std::size_t>(np) + w.ins.size();
  w.P2.resize(n2), a2.resize(n2 * H);
  if (b) b2.resize(n2 * H);
  std::size_t q = 0, it = 0;
  auto copy_row = [H](std::vector<double>& dst, std::size_t q, const double* src) {
    std::copy(src, src + H, dst.data() + q * H);
  };
  auto interp_row = [H](std::vector<double>& dst, std::size_t q, const double* r0, double t) {
    const double* r1 = r0 + H;
    double* d = dst.data() + q * H;
    for (int i = 0; i < H; ++i) d[i] = r0[i] + t * (r1[i] - r0[i]);
  };
  for (idx s = 0; s < np; ++s) {
    w.P2[q] = P[s];
    copy_row(a2, q, a.data() + s * H);
    if (b) copy_row(b2, q, b->data() + s * H);
    ++q;
    if (s + 1 == np) break;
    double last = P[s];
    for (; it < w.ins.size() && w.ins[it].first == s; ++it) {
      const double t = w.ins[it].second;
      const double z = P[s] + t * (P[s + 1] - P[s]);
      if (!(z > last && z < P[s + 1])) continue;  // within rounding of a point already there
      w.P2[q] = z;
      interp_row(a2, q, a.data() + s * H, t);
      if (b) interp_row(b2, q, b->data() + s * H, t);
      ++q;
      last = z;
    }
  }
  w.P2.resize(q), a2.resize(q * H);
  if (b) b2.resize(q * H);
  P.swap(w.P2);
  a.swap(a2);
  if (b) b->swap(b2);
}

// The network output of spline layer L for context ctx as an exact piecewise-linear function
// over [lo, hi] (lo < hi): points w.P, values w.O (np x NP), slopes w.S, lookup w.first.
void build_table(const Prepared& L, const double* ctx, double lo, double hi, Work& w) {
  const RqsLayer& R = *L.src;
  const int H = L.H;
  w.g.resize(H);
  for (int j = 0; j < H; ++j) w.g[j] = R.b_in[j] + (R.w_ctx[2 * j] * ctx[0] + R.w_ctx[2 * j + 1] * ctx[1]);
  w.gate.resize(static_cast<std::size_t>(L.nb) * H);
  for (int b = 0; b < L.nb; ++b)
    for (int j = 0; j < H; ++j) {
      const double* wg = R.w_gate + (static_cast<idx>(b) * H + j) * 2;
      w.gate[b * H + j] = sigmoid(R.b_gate[b * H + j] + (wg[0] * ctx[0] + wg[1] * ctx[1]));
    }
  // the first layer is affine in z: its units cross zero at -g/a
  w.cand.clear();
  for (int j = 0; j < H; ++j)
    if (R.w_in[j] != 0.0) {
      const double z = -w.g[j] / R.w_in[j];
      if (z > lo && z < hi) w.cand.push_back(z);
    }
  std::sort(w.cand.begin(), w.cand.end());
  w.P.assign(1, lo);
  for (double z : w.cand)
    if (z > w.P.back()) w.P.push_back(z);
  if (hi > w.P.back()) w.P.push_back(hi);
  idx np = static_cast<idx>(w.P.size());
  w.Hm.resize(static_cast<std::size_t>(np * H));
  for (idx p = 0; p < np; ++p)
    for (int j = 0; j < H; ++j) w.Hm[p * H + j] = R.w_in[j] * w.P[p] + w.g[j];
  for (int b = 0; b < L.nb; ++b) {
    const idx HH = static_cast<idx>(H) * H;
    np = static_cast<idx>(w.P.size());
    w.U.resize(static_cast<std::size_t>(np * H));
    affine_rows(w.Hm.data(), np, H, L.w0t.data() + b * HH, R.b0 + b * H, H, true, w.U.data());
    insert_crossings(w.P, w.U.data(), w.Hm, &w.U, H, w, w.H2, w.U2);
    np = static_cast<idx>(w.P.size());
    std::vector<double>& V = w.U2;
    V.resize(static_cast<std::size_t>(np * H));
    affine_rows(w.U.data(), np, H, L.w1t.data() + b * HH, R.b1 + b * H, H, true, V.data());
    const double* gate = w.gate.data() + b * H;
    for (idx p = 0; p < np; ++p)
      for (int j = 0; j < H; ++j) w.Hm[p * H + j] += V[p * H + j] * gate[j];
    if (b + 1 < L.nb) insert_crossings(w.P, w.Hm.data(), w.Hm, nullptr, H, w, w.H2, w.U2);
  }
  np = static_cast<idx>(w.P.size());
  const int NP = L.NP;
  w.O.resize(static_cast<std::size_t>(np * NP));
  affine_rows(w.Hm.data(), np, H, L.woutt.data(), R.b_out, NP, false, w.O.data());
  const idx nseg = np - 1;
  w.S.resize(static_cast<std::size_t>(nseg * NP));
  for (idx s = 0; s < nseg; ++s) {
    const double dz = w.P[s + 1] - w.P[s];
    for (int i = 0; i < NP; ++i) w.S[s * NP + i] = (w.O[(s + 1) * NP + i] - w.O[s * NP + i]) / dz;
  }
}

// Lookup of the piece holding x: uniform buckets over [P[0], P[np-1]]; first[b] is the last
// piece starting in an earlier bucket (bucket() is monotone, so never past x's piece), and a
// short forward scan finishes.
struct Lookup {
  double lo = 0, inv = 0;
  int nbk = 1;
  idx nseg = 1;
  const double* P = nullptr;
  const int* first = nullptr;
  int bucket(double x) const {
    const double f = (x - lo) * inv;
    return f < static_cast<double>(nbk) ? static_cast<int>(f) : nbk - 1;
  }
  idx piece(double x) const {
    idx s = first[bucket(x)];
    while (s + 1 < nseg && P[s + 1] <= x) ++s;
    return s;
  }
};

Lookup make_lookup(Work& w) {
  Lookup lk;
  lk.P = w.P.data();
  lk.nseg = static_cast<idx>(w.P.size()) - 1;
  lk.lo = w.P.front();
  lk.nbk = static_cast<int>(std::min<idx>(2 * lk.nseg, 1 << 20));
  lk.inv = lk.nbk / (w.P.back() - w.P.front());
  if (!std::isfinite(lk.inv)) lk.inv = 0.0;
  w.first.resize(lk.nbk);
  idx s = 0;
  for (int b = 0; b < lk.nbk; ++b) {
    while (s + 1 < lk.nseg && lk.bucket(w.P[s + 1]) < b) ++s;
    w.first[b] = static_cast<int>(s);
  }
  lk.first = w.first.data();
  return lk;
}

// One spline layer on all pairs of a row: xs (the network's input coordinate, all in [lo, hi]
// or non-finite) and ts are replaced by their images, log|det| added to lq; pairs whose xs is
// non-finite become NaN. The network output of each pair is interpolated on its piece.
template <int KC>
FCMLC_AI void spline_pairs_k(const SplineConsts& sc, int NP, const Lookup& lk, const double* O, const double* S,
                             double lo, double hi, double* xs, double* ts, double* lq, idx n_c) {
  VD u[3 * MAX_BINS];
  for (idx c0 = 0; c0 < n_c; c0 += LANES) {
    const idx nl = std::min<idx>(LANES, n_c - c0);
    VD x, t, dx;
    bool bad[LANES];
    const double* o[LANES];
    const double* sl[LANES];
    bool one_piece = true;
    for (int l = 0; l < LANES; ++l) {
      const idx c = c0 + std::min<idx>(l, nl - 1);  // padding lanes repeat the last pair
      const double xv = xs[c];
      bad[l] = !(xv >= lo && xv <= hi);
      const idx s = bad[l] ? 0 : lk.piece(xv);
      dx.set(l, bad[l] ? 0.0 : xv - lk.P[s]);
      o[l] = O + s * NP, sl[l] = S + s * NP;
      one_piece = one_piece && o[l] == o[0];
      x.set(l, bad[l] ? 0.0 : xv);
      t.set(l, ts[c]);
    }
    if (one_piece) {  // neighbouring y cells usually share a piece
      for (int i = 0; i < NP; ++i) u[i] = o[0][i] + dx * sl[0][i];
    } else {
      for (int i = 0; i < NP; ++i) {
        VD oi, si;
        for (int q = 0; q < NV; ++q) {
          const int l = 4 * q;
          oi.r[q] = v4d{o[l][i], o[l + 1][i], o[l + 2][i], o[l + 3][i]};
          si.r[q] = v4d{sl[l][i], sl[l + 1][i], sl[l + 2][i], sl[l + 3][i]};
        }
        u[i] = oi + dx * si;
      }
    }
    VD ld = vset(0.0);
    const VD tn = vspline_cond<KC>(sc, t, u, ld);
    const VD xn = vspline_fixed<KC>(sc, x, ld);
    for (int l = 0; l < nl; ++l) {
      const idx c = c0 + l;
      if (bad[l]) {
        xs[c] = ts[c] = lq[c] = NaN;
      } else {
        xs[c] = xn[l], ts[c] = tn[l];
        lq[c] += ld[l];
      }
    }
  }
}

// The default 8 bins compiled with K known (loops unrolled), any other number generically.
FCMLC_CLONES void spline_pairs(const SplineConsts& sc, int NP, const Lookup& lk, const double* O, const double* S,
                               double lo, double hi, double* xs, double* ts, double* lq, idx n_c) {
  if (sc.K == 8)
    spline_pairs_k<8>(sc, NP, lk, O, S, lo, hi, xs, ts, lq, n_c);
  else
    spline_pairs_k<0>(sc, NP, lk, O, S, lo, hi, xs, ts, lq, n_c);
}

// log q(y_c | ctx) for all c of one context, into out (n_c).
void row_log_prob(const std::vector<Prepared>& layers, const RqsFlowSpec& spec, const double* y, idx n_c,
                  const double* ctx, double* out, Work& w) {
  w.z0.resize(n_c), w.z1.resize(n_c);
  double* z[2] = {w.z0.data(), w.z1.data()};
  double* lq = out;
  for (idx c = 0; c < n_c; ++c) z[0][c] = y[2 * c], z[1][c] = y[2 * c + 1], lq[c] = 0.0;
  for (const Prepared& L : layers) {
    if (!L.is_spline) {
      const LuLayer& lu = L.lu;
      const double* up = lu.upper;
      const double* lo = lu.lower;
      for (idx c = 0; c < n_c; ++c) {
        const double a0 = z[lu.perm[0]][c], a1 = z[lu.perm[1]][c];
        const double u0 = up[0] * a0 + up[1] * a1, u1 = up[2] * a0 + up[3] * a1;
        z[0][c] = (lo[0] * u0 + lo[1] * u1) + lu.bias[0];
        z[1][c] = (lo[2] * u0 + lo[3] * u1) + lu.bias[1];
        lq[c] += lu.logdet;
      }
      continue;
    }
    double* xs = z[L.cond];
    double* ts = z[1 - L.cond];
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (idx c = 0; c < n_c; ++c)
      if (std::isfinite(xs[c])) lo = std::min(lo, xs[c]), hi = std::max(hi, xs[c]);
    if (!(lo <= hi)) {  // no finite value: the whole row is undefined
      for (idx c = 0; c < n_c; ++c) xs[c] = ts[c] = lq[c] = NaN;
      continue;
    }
    const double top = hi > lo ? hi : lo + 1.0;
    build_table(L, ctx, lo, top, w);
    const Lookup lk = make_lookup(w);
    SplineConsts sc;
    sc.K = L.K, sc.B = L.B, sc.mbw = L.mbw, sc.mbh = L.mbh, sc.md = L.md, sc.bc = L.bc;
    sc.fcw = L.fcw.data(), sc.fch = L.fch.data(), sc.fd = L.fd.data();
    spline_pairs(sc, L.NP, lk, w.O.data(), w.S.data(), lo, hi, xs, ts, lq, n_c);
  }
  const double c0 = -LOG_2PI - spec.log_scale[0] - spec.log_scale[1];
  const double s0 = std::exp(spec.log_scale[0]), s1 = std::exp(spec.log_scale[1]);
  for (idx c = 0; c < n_c; ++c) {
    const double e0 = (z[0][c] - spec.loc[0]) / s0, e1 = (z[1][c] - spec.loc[1]) / s1;
    lq[c] += c0 - 0.5 * (e0 * e0 + e1 * e1);
  }
}

template <typename RowFn>
void for_rows(idx n_k, idx n_c, int nt, RowFn&& fn) {
  ExceptionCapture ec;
#pragma omp parallel num_threads(nt)
  {
    ec.run([&] {
      Work w;
      w.z0.reserve(n_c), w.z1.reserve(n_c);
      std::vector<double> lq(static_cast<std::size_t>(n_c));
#pragma omp for schedule(dynamic, 1)
      for (idx k = 0; k < n_k; ++k) fn(k, lq.data(), w);
    });
  }
  ec.rethrow();
}

}  // namespace

void rqs_flow_log_prob_grid(const RqsFlowSpec& spec, const double* y, idx n_c, const double* ctx, idx n_k,
                            double* out, int nt) {
  const std::vector<Prepared> layers = prepare(spec);
  for_rows(n_k, n_c, nt, [&](idx k, double*, Work& w) {
    row_log_prob(layers, spec, y, n_c, ctx + 2 * k, out + k * n_c, w);
  });
}

void rqs_flow_transition(const RqsFlowSpec& spec, const double* y, idx n_c, const double* ctx, idx n_k,
                         double cell_area, float* T, unsigned char* row_ok, int nt) {
  const std::vector<Prepared> layers = prepare(spec);
  for_rows(n_k, n_c, nt, [&](idx k, double* lq, Work& w) {
    row_log_prob(layers, spec, y, n_c, ctx + 2 * k, lq, w);
    double m = -std::numeric_limits<double>::infinity();
    for (idx c = 0; c < n_c; ++c)
      if (std::isfinite(lq[c])) m = std::max(m, lq[c]);
    float* t = T + k * n_c;
    if (!std::isfinite(m)) {
      row_ok[k] = 0;
      std::fill(t, t + n_c, std::numeric_limits<float>::quiet_NaN());
      return;
    }
    double sum = 0.0;
    for (idx c = 0; c < n_c; ++c) {
      lq[c] = std::isfinite(lq[c]) ? std::exp(lq[c] - m) : 0.0;
      sum += lq[c];
    }
    const double norm = sum * cell_area;
    for (idx c = 0; c < n_c; ++c) t[c] = static_cast<float>(lq[c] / norm);
    row_ok[k] = 1;
  });
}

// ---- Python bindings --------------------------------------------------------------------------

namespace {

struct BoundSpec {
  RqsFlowSpec spec;
  std::vector<carray<double>> keep;  // the arrays the spec points into
};

const double* take(BoundSpec& bs, const py::dict& d, const char* key, std::initializer_list<idx> shape,
                   const std::string& where) {
  if (!d.contains(key)) throw py::value_error(where + ": missing '" + key + "'");
  carray<double> a = d[key].cast<carray<double>>();
  std::string want = "(";
  bool ok = a.ndim() == static_cast<idx>(shape.size());
  int i = 0;
  for (idx s : shape) {
    want += (i ? ", " : "") + std::to_string(s);
    if (ok && a.shape(i) != s) ok = false;
    ++i;
  }
  want += shape.size() == 1 ? ",)" : ")";
  if (!ok) {
    std::string got = "(";
    for (idx j = 0; j < a.ndim(); ++j) got += (j ? ", " : "") + std::to_string(a.shape(j));
    throw py::value_error(where + ": '" + key + "' must have shape " + want + ", got " + got + ")");
  }
  bs.keep.push_back(a);
  return bs.keep.back().data();
}

BoundSpec bind_spec(const py::list& layers, const carray<double>& loc, const carray<double>& log_scale) {
  BoundSpec bs;
  bs.keep.reserve(16 * layers.size() + 2);
  require(loc.ndim() == 1 && loc.shape(0) == 2, "loc must have shape (2,)");
  require(log_scale.ndim() == 1 && log_scale.shape(0) == 2, "log_scale must have shape (2,)");
  for (int i = 0; i < 2; ++i) bs.spec.loc[i] = loc.data()[i], bs.spec.log_scale[i] = log_scale.data()[i];
  for (std::size_t li = 0; li < layers.size(); ++li) {
    const std::string where = "layers[" + std::to_string(li) + "]";
    const py::dict d = layers[li].cast<py::dict>();
    require(d.contains("kind"), where + ": missing 'kind'");
    const std::string kind = d["kind"].cast<std::string>();
    FlowLayer fl;
    if (kind == "linear") {
      const carray<long long> perm = d["perm"].cast<carray<long long>>();
      require(perm.ndim() == 1 && perm.shape(0) == 2 &&
                  ((perm.data()[0] == 0 && perm.data()[1] == 1) || (perm.data()[0] == 1 && perm.data()[1] == 0)),
              where + ": 'perm' must be a permutation of (0, 1)");
      fl.lu.perm[0] = static_cast<int>(perm.data()[0]), fl.lu.perm[1] = static_cast<int>(perm.data()[1]);
      const double* up = take(bs, d, "upper", {2, 2}, where);
      const double* lo = take(bs, d, "lower", {2, 2}, where);
      const double* bias = take(bs, d, "bias", {2}, where);
      for (int i = 0; i < 4; ++i) fl.lu.upper[i] = up[i], fl.lu.lower[i] = lo[i];
      fl.lu.bias[0] = bias[0], fl.lu.bias[1] = bias[1];
      require(d.contains("logdet"), where + ": missing 'logdet'");
      fl.lu.logdet = d["logdet"].cast<double>();
    } else if (kind == "spline") {
      fl.is_spline = true;
      RqsLayer& L = fl.rqs;
      for (const char* key : {"cond", "n_bins", "tail_bound", "min_bin_width", "min_bin_height", "min_derivative"})
        require(d.contains(key), where + ": missing '" + key + "'");
      L.cond = d["cond"].cast<int>();
      require(L.cond == 0 || L.cond == 1, where + ": 'cond' must be 0 or 1");
      L.n_bins = d["n_bins"].cast<int>();
      require(L.n_bins >= 1 && L.n_bins <= MAX_BINS,
              where + ": 'n_bins' must be in [1, " + std::to_string(MAX_BINS) + "], got " + std::to_string(L.n_bins));
      L.tail_bound = d["tail_bound"].cast<double>();
      L.min_bin_width = d["min_bin_width"].cast<double>();
      L.min_bin_height = d["min_bin_height"].cast<double>();
      L.min_derivative = d["min_derivative"].cast<double>();
      require(L.tail_bound > 0.0 && std::isfinite(L.tail_bound), where + ": 'tail_bound' must be finite and > 0");
      require(L.min_bin_width >= 0.0 && L.min_bin_width * L.n_bins <= 1.0 && L.min_bin_height >= 0.0 &&
                  L.min_bin_height * L.n_bins <= 1.0 && L.min_derivative >= 0.0 && L.min_derivative < 1.0,
              where + ": minimal bin width/height too large for the number of bins, or min_derivative outside [0, 1)");
      const carray<double> w_in = d["w_in"].cast<carray<double>>();
      require(w_in.ndim() == 1 && w_in.shape(0) >= 1, where + ": 'w_in' must be a non-empty 1-D array");
      const idx H = w_in.shape(0);
      const carray<double> w0 = d["w0"].cast<carray<double>>();
      require(w0.ndim() == 3, where + ": 'w0' must have shape (n_blocks, hidden, hidden)");
      const idx nb = w0.shape(0), NP = 3 * L.n_bins - 1;
      L.hidden = static_cast<int>(H), L.n_blocks = static_cast<int>(nb);
      L.w_in = take(bs, d, "w_in", {H}, where);
      L.w_ctx = take(bs, d, "w_ctx", {H, 2}, where);
      L.b_in = take(bs, d, "b_in", {H}, where);
      L.w0 = take(bs, d, "w0", {nb, H, H}, where);
      L.b0 = take(bs, d, "b0", {nb, H}, where);
      L.w1 = take(bs, d, "w1", {nb, H, H}, where);
      L.b1 = take(bs, d, "b1", {nb, H}, where);
      L.w_gate = take(bs, d, "w_gate", {nb, H, 2}, where);
      L.b_gate = take(bs, d, "b_gate", {nb, H}, where);
      L.w_out = take(bs, d, "w_out", {NP, H}, where);
      L.b_out = take(bs, d, "b_out", {NP}, where);
      L.fixed = take(bs, d, "fixed", {NP}, where);
    } else {
      throw py::value_error(where + ": 'kind' must be 'linear' or 'spline', got '" + kind + "'");
    }
    bs.spec.layers.push_back(fl);
  }
  return bs;
}

void check_points(const carray<double>& a, const char* name) {
  require(a.ndim() == 2 && a.shape(1) == 2, std::string(name) + " must have shape (n, 2)");
  require_finite(a, name);
}

py::array_t<double> flow_grid_log_prob(const carray<double>& y, const carray<double>& context, const py::list& layers,
                                       const carray<double>& loc, const carray<double>& log_scale,
                                       std::optional<int> threads) {
  check_points(y, "y");
  check_points(context, "context");
  const BoundSpec bs = bind_spec(layers, loc, log_scale);
  const int nt = resolve_threads(threads);
  const idx n_c = y.shape(0), n_k = context.shape(0);
  py::array_t<double> out({n_k, n_c});
  double* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    rqs_flow_log_prob_grid(bs.spec, y.data(), n_c, context.data(), n_k, o, nt);
  }
  return out;
}

py::tuple flow_transition(const carray<double>& y, const carray<double>& context, const py::list& layers,
                          const carray<double>& loc, const carray<double>& log_scale, double cell_area,
                          std::optional<int> threads) {
  check_points(y, "y");
  check_points(context, "context");
  require(y.shape(0) >= 1, "y must hold at least one point");
  require(cell_area > 0.0 && std::isfinite(cell_area), "cell_area must be finite and > 0");
  const BoundSpec bs = bind_spec(layers, loc, log_scale);
  const int nt = resolve_threads(threads);
  const idx n_c = y.shape(0), n_k = context.shape(0);
  py::array_t<float> T({n_k, n_c});
  py::array_t<bool> ok(n_k);
  float* t = T.mutable_data();
  unsigned char* okp = reinterpret_cast<unsigned char*>(ok.mutable_data());
  {
    py::gil_scoped_release nogil;
    rqs_flow_transition(bs.spec, y.data(), n_c, context.data(), n_k, cell_area, t, okp, nt);
  }
  return py::make_tuple(T, ok);
}

}  // namespace

void register_transition(py::module_& m) {
  m.def("flow_grid_log_prob", &flow_grid_log_prob, py::arg("y"), py::arg("context"), py::arg("layers"),
        py::arg("loc"), py::arg("log_scale"), py::arg("threads") = py::none(),
        "log q(y_c | context_k) of a 2-D conditional spline flow for every pair: y (n_c, 2), context (n_k, 2), "
        "layers in log_prob order (dicts, see fcmlc.models.transition) -> (n_k, n_c) float64.");
  m.def("flow_transition", &flow_transition, py::arg("y"), py::arg("context"), py::arg("layers"), py::arg("loc"),
        py::arg("log_scale"), py::arg("cell_area"), py::arg("threads") = py::none(),
        "Row-normalised transition matrix of a 2-D conditional spline flow: (T (n_k, n_c) float32 with "
        "sum_c T[k, c] cell_area = 1, row_ok (n_k,) bool: False where row k has no finite density).");
}

}  // namespace fcmlc

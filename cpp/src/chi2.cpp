// Kernels: chi2 scans over the (|Ue4|, dm2) grid and fused Feldman-Cousins toys
// (generate -> whiten -> scan -> minimum per toy, never materialising toys x grid).
// The reduction of each experiment to (A, N0, d | m) is described in fcmlc/chi2.hpp.
// Layout: the numeric kernels on raw arrays (lane helpers, then Chi2Core), the C++ API
// fcmlc::Chi2Kernel of chi2.hpp over Chi2Core, and last the Python binding (register_chi2:
// argument checks, NumPy conversions, GIL release).
#include "fcmlc/chi2.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fcmlc/common.hpp"
#include "fcmlc/sampling.hpp"

namespace fcmlc {

namespace {

// Toys are processed LANES at a time (vectorised across toys: every lane performs the same
// IEEE operations in the same order, so a toy's result does not depend on its neighbours);
// a parallel task is one true point and up to TOY_BLOCK toys.
constexpr int LANES = 8;
constexpr int TOY_BLOCK = 64;

// AVX2 clone of the hot loops. FMA is deliberately NOT enabled: without contraction the
// AVX2 and baseline clones round identically, so results are bit-identical across
// x86-64 machines (e.g. heterogeneous Dask workers), not only across thread counts.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FCMLC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FCMLC_CLONES
#endif

using idx = std::size_t;
using sidx = std::ptrdiff_t;  // data vectors, points and toys (as Python sizes)

// chi2 offset of a linear experiment (set) relative to |r|^2 at amplitude s2:
// s2 (2 r.d + s2 |d|^2). The same expression is used by the scan and by the toys.
inline double lin_value(double s2, double g, double n) { return s2 * (2.0 * g + s2 * n); }

// Eight toys in float64 as two four-wide halves (GCC/Clang vector extension: SSE2 pairs in the
// baseline clone, one ymm register per half in the AVX2 clone; a single 64-byte vector type is
// lowered through the stack without AVX-512). Element-wise + - * are the scalar IEEE operations.
typedef double d4_t __attribute__((vector_size(4 * sizeof(double)), aligned(sizeof(double))));
typedef float f4_t __attribute__((vector_size(4 * sizeof(float)), aligned(sizeof(float))));
struct lanes_t {
  d4_t lo, hi;
  double operator[](int l) const { return l < 4 ? lo[l] : hi[l - 4]; }
};
static_assert(LANES == 8 && sizeof(lanes_t) == LANES * sizeof(double), "lanes_t holds LANES doubles");
#define FCMLC_AI inline __attribute__((always_inline))
FCMLC_AI lanes_t operator+(lanes_t a, lanes_t b) { return {a.lo + b.lo, a.hi + b.hi}; }
FCMLC_AI lanes_t operator-(lanes_t a, lanes_t b) { return {a.lo - b.lo, a.hi - b.hi}; }
FCMLC_AI lanes_t operator*(lanes_t a, lanes_t b) { return {a.lo * b.lo, a.hi * b.hi}; }
FCMLC_AI lanes_t operator+(lanes_t a, double b) { return {a.lo + b, a.hi + b}; }
FCMLC_AI lanes_t operator-(lanes_t a, double b) { return {a.lo - b, a.hi - b}; }
FCMLC_AI lanes_t operator*(double a, lanes_t b) { return {a * b.lo, a * b.hi}; }
FCMLC_AI lanes_t& operator+=(lanes_t& a, lanes_t b) { a.lo += b.lo, a.hi += b.hi; return a; }
// Eight lanes from / to memory one four-wide half at a time: a 64-byte memcpy into lanes_t goes
// through the stack in 16-byte pieces and stalls the loads that follow (store forwarding).
FCMLC_AI lanes_t load_lanes(const double* p) {
  lanes_t v;
  __builtin_memcpy(&v.lo, p, sizeof v.lo);
  __builtin_memcpy(&v.hi, p + 4, sizeof v.hi);
  return v;
}
FCMLC_AI void store_lanes(double* p, lanes_t v) {
  __builtin_memcpy(p, &v.lo, sizeof v.lo);
  __builtin_memcpy(p + 4, &v.hi, sizeof v.hi);
}
// The same eight toys in float32 (one ymm register in the AVX2 clone, an SSE pair in the
// baseline clone): the centred norm path's per-point quadratic form (see general_lanes).
typedef float flanes_t __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
FCMLC_AI flanes_t to_float(lanes_t a) {  // round to nearest, per lane
  const f4_t lo = __builtin_convertvector(a.lo, f4_t), hi = __builtin_convertvector(a.hi, f4_t);
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
}
FCMLC_AI lanes_t to_double(flanes_t a) {  // exact
  const f4_t lo = __builtin_shufflevector(a, a, 0, 1, 2, 3), hi = __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return {__builtin_convertvector(lo, d4_t), __builtin_convertvector(hi, d4_t)};
}

// out[j*LANES + l] = base[j] + sum_g W[j*kg + g] * Z[g*LANES + l], base == nullptr -> 0.
// Each output accumulates in ascending g (rows are blocked by 4 only for instruction-level
// parallelism; the per-element operation sequence is that of the scalar loop).
FCMLC_CLONES void lane_matvec(const double* __restrict W, const double* __restrict base, const double* __restrict Z,
                              int rows, int kg, double* __restrict out) {
  const lanes_t zero = {};
  int j = 0;
  for (; j + 4 <= rows; j += 4) {
    lanes_t a0 = zero + (base ? base[j] : 0.0), a1 = zero + (base ? base[j + 1] : 0.0);
    lanes_t a2 = zero + (base ? base[j + 2] : 0.0), a3 = zero + (base ? base[j + 3] : 0.0);
    const double* w0 = W + static_cast<idx>(j) * kg;
    const double* w1 = w0 + kg;
    const double* w2 = w1 + kg;
    const double* w3 = w2 + kg;
    for (int g = 0; g < kg; ++g) {
      lanes_t z;
      z = load_lanes(Z + static_cast<idx>(g) * LANES);
      a0 += w0[g] * z;
      a1 += w1[g] * z;
      a2 += w2[g] * z;
      a3 += w3[g] * z;
    }
    store_lanes(out + static_cast<idx>(j) * LANES, a0);
    store_lanes(out + static_cast<idx>(j + 1) * LANES, a1);
    store_lanes(out + static_cast<idx>(j + 2) * LANES, a2);
    store_lanes(out + static_cast<idx>(j + 3) * LANES, a3);
  }
  for (; j < rows; ++j) {
    lanes_t a0 = zero + (base ? base[j] : 0.0);
    const double* w0 = W + static_cast<idx>(j) * kg;
    for (int g = 0; g < kg; ++g) {
      lanes_t z;
      z = load_lanes(Z + static_cast<idx>(g) * LANES);
      a0 += w0[g] * z;
    }
    store_lanes(out + static_cast<idx>(j) * LANES, a0);
  }
}

// row[u] = R2 + lin_value(s2[u], g, n): one dm2 row of a linear chi2 map.
FCMLC_CLONES void linear_row(const double* s2, int nu, double R2, double g, double n, double* row) {
  for (int u = 0; u < nu; ++u) row[u] = R2 + lin_value(s2[u], g, n);
}

// lower_bound on the ascending s2 grid (the number of entries < x) in O(1): positive doubles
// order like their bit patterns, so bits >> 46 (exponent and 6 mantissa bits, about 64
// buckets per octave) indexes a table holding, per bucket, the number of entries in lower
// buckets; a short scan inside the bucket makes the answer exact for any grid.
class SortedIndex {
 public:
  void build(const std::vector<double>& sorted) {
    a_ = sorted;
    n_ = static_cast<int>(a_.size());
    first_pos_ = 0;
    while (first_pos_ < n_ && !(a_[first_pos_] > 0.0)) ++first_pos_;
    table_.clear();
    if (first_pos_ == n_) return;
    key0_ = key(a_[first_pos_]);
    const std::uint64_t span = key(a_[n_ - 1]) - key0_ + 1;
    if (span > (1u << 22)) return;  // absurd dynamic range: binary search instead
    table_.assign(span + 1, 0);
    int q = first_pos_;
    for (std::uint64_t b = 0; b <= span; ++b) {
      while (q < n_ && key(a_[q]) - key0_ < b) ++q;
      table_[b] = q;
    }
  }
  int lower_bound(double x) const {
    if (!(x > a_[0])) return 0;  // x <= smallest (also NaN)
    if (x > a_[n_ - 1]) return n_;
    // now 0 <= a_[0] < x <= a_[n-1]: x > 0 and a positive entry exists
    if (x <= a_[first_pos_]) return first_pos_;
    int q = table_.empty() ? static_cast<int>(std::lower_bound(a_.begin(), a_.end(), x) - a_.begin())
                           : table_[key(x) - key0_];
    while (q < n_ && a_[q] < x) ++q;
    return q;
  }

 private:
  static std::uint64_t key(double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    return b >> 46;
  }
  std::vector<double> a_;
  std::vector<int> table_;
  std::uint64_t key0_ = 0;
  int n_ = 0, first_pos_ = 0;
};

// y = x - N0, r = A y (ascending sums).
inline void whiten_one(const Chi2Experiment& e, const double* x, double* y, double* r) {
  for (int i = 0; i < e.n; ++i) y[i] = x[i] - e.N0[i];
  for (int a = 0; a < e.k; ++a) {
    const double* row = e.A.data() + static_cast<idx>(a) * e.n;
    double s = 0.0;
    for (int i = 0; i < e.n; ++i) s += row[i] * y[i];
    r[a] = s;
  }
}

// out[j] = sum_a W[j*k + a] v[a]
inline void matvec(const double* W, const double* v, int rows, int k, double* out) {
  for (int j = 0; j < rows; ++j) {
    const double* w = W + static_cast<idx>(j) * k;
    double s = 0.0;
    for (int a = 0; a < k; ++a) s += w[a] * v[a];
    out[j] = s;
  }
}

inline double sqdist(const double* r, const double* m, int k) {
  double s = 0.0;
  for (int a = 0; a < k; ++a) {
    const double t = r[a] - m[a];
    s += t * t;
  }
  return s;
}

// Deterministic tie rule shared by every minimum: smaller value, then smaller point index.
inline void take_min(double v, std::int64_t p, double& best, std::int64_t& bp) {
  if (v < best || (v == best && p < bp)) {
    best = v;
    bp = p;
  }
}

// A norm experiment (multiplicative normalisation groups) as general_lanes reads it: the
// packed factors L_p^-1, and per toy lane q, b0' (kn), b1 (n_dm2 x kn, linear) or y (n, general).
struct NormLane {
  const double* L;
  int kn, n;
  bool linear;
  double prior;
  const int* gid;
  const double* mug;  // general: n_points x n
  const double* Q;    // LANES
  const double* B0;   // kn x LANES
  const double* B1;   // linear: n_dm2 x kn x LANES
  const double* Y;    // general: n x LANES
  double* bt;         // scratch kn x LANES
  // centred form (linear only, see general_lanes): float32 L_p^-1, per lane chi2_null, per dm2
  // row the coefficients RA, RB of s2 and s2^2 and the vectors c0, c1 (c(s2) = c0 - s2 c1)
  bool centred;
  const float* Lf;    // n_points x kn(kn+1)/2
  const double* CN;   // LANES
  const double* RA;   // n_dm2 x LANES
  const double* RB;   // n_dm2 x LANES
  const float* C0;    // n_dm2 x kn x LANES
  const float* C1;    // n_dm2 x kn x LANES
  float* ct;          // scratch CENTRED_BLOCK x kn x LANES
  // pruning (general_lanes_pruned): per grid point K_p >= the factor bounding the computed float32
  // |L_p^-1 c|^2 by K_p |c|^2 (rounding included, see set_prune_factors); nullptr: not set
  const double* Kb;
  // reference bound (optional, see general_lanes_pruned): per row R_j (n_dm2 x kn(kn+1)/2) and
  // |R_j|_F^2 (FR < 0: none for that row), per point A_p, B_p; Rr == nullptr: not set
  const double* Rr;
  const double* FR;
  const double* Ab;
  const double* Bb;
};

// Grid points per step of the centred quadratic form: independent accumulation chains (the
// per-point operations, and so the result, do not depend on the blocking).
constexpr int CENTRED_BLOCK = 4;

// The centred float32 part of one dm2 row j of a linear norm experiment, for every s2 point u:
// acc[u] += chi2_null + s (RA_j + s RB_j) - s^2 |L_p^-1 (c0_j - s c1_j)|^2, p = j nu + u.
// The quadratic form is float32 (it is multiplied by s^2 and bounded by the full-mixing
// Delta chi2, not ~q as in the uncentred form); each point's operations are those of the
// single-point loop at the end, in the same order, whatever its position in a block.
// centred_points does this for the points u0 .. u0 + n - 1 only (acc indexed by u): the
// operations of a point do not depend on the range it is computed in.
FCMLC_AI void centred_points(const NormLane& nl, int j, int nu, int u0, int n, const double* s2, lanes_t* acc) {
  const int kn = nl.kn;
  const idx kk = static_cast<idx>(kn) * (kn + 1) / 2;
  const flanes_t* c0 = reinterpret_cast<const flanes_t*>(nl.C0 + static_cast<idx>(j) * kn * LANES);
  const flanes_t* c1 = reinterpret_cast<const flanes_t*>(nl.C1 + static_cast<idx>(j) * kn * LANES);
  flanes_t* ct = reinterpret_cast<flanes_t*>(nl.ct);
  lanes_t cn, ra, rb;
  cn = load_lanes(nl.CN);
  ra = load_lanes(nl.RA + static_cast<idx>(j) * LANES);
  rb = load_lanes(nl.RB + static_cast<idx>(j) * LANES);
  const float* Lrow = nl.Lf + static_cast<idx>(j) * nu * kk;
  const flanes_t fzero = {};
  const int uend = u0 + n;
  int u = u0;
  for (; u + CENTRED_BLOCK <= uend; u += CENTRED_BLOCK) {
    static_assert(CENTRED_BLOCK == 4, "the block below is written out for 4 points");
    for (int q = 0; q < 4; ++q) {
      const float sf = static_cast<float>(s2[u + q]);
      for (int g = 0; g < kn; ++g) ct[q * kn + g] = c0[g] - sf * c1[g];
    }
    const flanes_t *ct0 = ct, *ct1 = ct + kn, *ct2 = ct + 2 * kn, *ct3 = ct + 3 * kn;
    const float* L0 = Lrow + static_cast<idx>(u) * kk;
    const float *L1 = L0 + kk, *L2 = L1 + kk, *L3 = L2 + kk;
    flanes_t q0 = fzero, q1 = fzero, q2 = fzero, q3 = fzero;
    idx o = 0;
    for (int a = 0; a < kn; ++a) {
      flanes_t t0 = fzero, t1 = fzero, t2 = fzero, t3 = fzero;
      for (int c = 0; c <= a; ++c, ++o) {
        t0 += L0[o] * ct0[c];
        t1 += L1[o] * ct1[c];
        t2 += L2[o] * ct2[c];
        t3 += L3[o] * ct3[c];
      }
      q0 += t0 * t0;
      q1 += t1 * t1;
      q2 += t2 * t2;
      q3 += t3 * t3;
    }
    const flanes_t qs[4] = {q0, q1, q2, q3};
    for (int q = 0; q < 4; ++q) {
      const double s = s2[u + q];
      acc[u + q] += (cn + s * (ra + s * rb)) - (s * s) * to_double(qs[q]);
    }
  }
  for (; u < uend; ++u) {
    const float sf = static_cast<float>(s2[u]);
    for (int g = 0; g < kn; ++g) ct[g] = c0[g] - sf * c1[g];
    const float* L0 = Lrow + static_cast<idx>(u) * kk;
    flanes_t q0 = fzero;
    idx o = 0;
    for (int a = 0; a < kn; ++a) {
      flanes_t t0 = fzero;
      for (int c = 0; c <= a; ++c, ++o) t0 += L0[o] * ct[c];
      q0 += t0 * t0;
    }
    const double s = s2[u];
    acc[u] += (cn + s * (ra + s * rb)) - (s * s) * to_double(q0);
  }
}

FCMLC_AI void centred_row(const NormLane& nl, int j, int nu, const double* s2, lanes_t* acc) {
  centred_points(nl, j, nu, 0, nu, s2, acc);
}

// B1[j, g, l] = sum over the bins i of group g (ascending) of D[j, i] y[i, l]: the per-row group
// sums b1(j) of a linear norm experiment's toy lanes.
FCMLC_CLONES void group_rows(int nd, int n, int kn, const double* __restrict D, const int* __restrict gid,
                             const double* __restrict y, double* __restrict B1) {
  const lanes_t zero = {};
  for (int j = 0; j < nd; ++j) {
    double* bj = B1 + static_cast<idx>(j) * kn * LANES;
    const double* Dj = D + static_cast<idx>(j) * n;
    for (int g = 0; g < kn; ++g) store_lanes(bj + static_cast<idx>(g) * LANES, zero);
    for (int i = 0; i < n; ++i) {
      double* bg = bj + static_cast<idx>(gid[i]) * LANES;
      store_lanes(bg, load_lanes(bg) + Dj[i] * load_lanes(y + static_cast<idx>(i) * LANES));
    }
  }
}

// Packed lower-triangular quadratic |L b|^2 (rows in order, each accumulated in ascending c).
inline double tri_sq(const double* L, const double* b, int k) {
  double s = 0.0;
  idx o = 0;
  for (int a = 0; a < k; ++a) {
    double t = 0.0;
    for (int c = 0; c <= a; ++c) t += L[o++] * b[c];
    s += t * t;
  }
  return s;
}

// Per toy lanes, the centred form's float64 terms (see build_centred and centred_row):
// beta0 = G0^-1 b0', chi2_null = q - b0'.beta0 and per dm2 row j
// c0 = H_j beta0 - b1(j), c1 = G11_j beta0 (stored in float32), RA = 2 beta0.b1(j) - beta0.H_j beta0,
// RB = beta0.G11_j beta0.
FCMLC_CLONES void centred_rows(int kn, int nd, const double* __restrict G0inv, const double* __restrict Hrow,
                               const double* __restrict G11row, const double* __restrict Q,
                               const double* __restrict B0, const double* __restrict B1, double* __restrict Beta,
                               double* __restrict CN, double* __restrict RA, double* __restrict RB,
                               float* __restrict C0, float* __restrict C1) {
  const idx kk2 = static_cast<idx>(kn) * kn;
  const lanes_t zero = {};
  const lanes_t* b0 = reinterpret_cast<const lanes_t*>(B0);
  lanes_t* beta = reinterpret_cast<lanes_t*>(Beta);
  lanes_t bb = zero;
  for (int g = 0; g < kn; ++g) {
    lanes_t t = zero;
    for (int h = 0; h < kn; ++h) t += G0inv[static_cast<idx>(g) * kn + h] * b0[h];
    beta[g] = t;
    bb += b0[g] * t;
  }
  lanes_t q;
  q = load_lanes(Q);
  const lanes_t cn = q - bb;
  store_lanes(CN, cn);
  for (int j = 0; j < nd; ++j) {
    const double* H = Hrow + static_cast<idx>(j) * kk2;
    const double* G11 = G11row + static_cast<idx>(j) * kk2;
    const lanes_t* b1 = reinterpret_cast<const lanes_t*>(B1 + static_cast<idx>(j) * kn * LANES);
    flanes_t* c0 = reinterpret_cast<flanes_t*>(C0 + static_cast<idx>(j) * kn * LANES);
    flanes_t* c1 = reinterpret_cast<flanes_t*>(C1 + static_cast<idx>(j) * kn * LANES);
    lanes_t a1 = zero, a2 = zero, a3 = zero;
    for (int g = 0; g < kn; ++g) {
      lanes_t hb = zero, gb = zero;
      for (int h = 0; h < kn; ++h) {
        hb += H[static_cast<idx>(g) * kn + h] * beta[h];
        gb += G11[static_cast<idx>(g) * kn + h] * beta[h];
      }
      c0[g] = to_float(hb - b1[g]);
      c1[g] = to_float(gb);
      a1 += beta[g] * hb;
      a2 += beta[g] * b1[g];
      a3 += beta[g] * gb;
    }
    const lanes_t ra = 2.0 * a2 - a1;
    store_lanes(RA + static_cast<idx>(j) * LANES, ra);
    store_lanes(RB + static_cast<idx>(j) * LANES, a3);
  }
}

// chi2 scan of a linear norm experiment at four consecutive s2 points of a row at once (one
// float64 lane per point): out[q] = qv - |L_q^-1 (b0 - s_q b1)|^2 from the point-interleaved
// factors Lt (kn(kn+1)/2 x 4). Every lane performs norm_point's scalar operations in the same
// order, so the values are bit-identical to it.
FCMLC_CLONES void norm_points4(const double* __restrict Lt, const double* __restrict b0, const double* __restrict b1,
                               const double* __restrict s4, int kn, double qv, double* __restrict bt,
                               double* __restrict out) {
  d4_t sv;
  __builtin_memcpy(&sv, s4, sizeof sv);
  d4_t* btv = reinterpret_cast<d4_t*>(bt);
  for (int g = 0; g < kn; ++g) btv[g] = b0[g] - sv * b1[g];
  const d4_t zero = {};
  d4_t sq = zero;
  idx o = 0;
  for (int a = 0; a < kn; ++a) {
    d4_t t = zero;
    for (int c = 0; c <= a; ++c, ++o) {
      d4_t l;
      __builtin_memcpy(&l, Lt + 4 * o, sizeof l);
      t += l * btv[c];
    }
    sq += t * t;
  }
  const d4_t r = qv - sq;
  __builtin_memcpy(out, &r, sizeof r);
}

// The value at grid point p = j nu + u of every part except the centred norm experiments
// (general_lanes adds those from crow; at the true point pt they are in here, float64 profile).
// pre (optional): for each one-group general norm experiment e, pre[e] = its sum
// prior + sum_i mu_p,i y_i, computed beforehand with exactly these operations (one_group_sums4).
FCMLC_AI lanes_t rest_value(int j, std::int64_t p, double s, lanes_t twoG, double N, int n_gen,
                            const double* const* rls, const double* const* ms, const int* ks, int n_norm,
                            const NormLane* nls, std::int64_t pt, const lanes_t* pre = nullptr) {
  const lanes_t zero = {};
  lanes_t v = s * (twoG + (zero + s * N));  // lin_value(s, G, N) per lane
  for (int e = 0; e < n_gen; ++e) {
    const int k = ks[e];
    const double* rl = rls[e];
    const double* m = ms[e] + static_cast<idx>(p) * k;
    lanes_t sd = zero;
    for (int a = 0; a < k; ++a) {
      lanes_t t;
      t = load_lanes(rl + static_cast<idx>(a) * LANES);
      t = t - m[a];
      sd += t * t;
    }
    v += sd;
  }
  // norm experiments: v += q - |L_p^-1 b'(p)|^2, the scalar norm_point's operations per lane
  for (int e = 0; e < n_norm; ++e) {
    const NormLane& nl = nls[e];
    const int kn = nl.kn;
    if (nl.centred && p != pt) continue;  // in crow (centred_row)
    lanes_t* bt = reinterpret_cast<lanes_t*>(nl.bt);
    if (nl.linear) {
      const double* b1 = nl.B1 + static_cast<idx>(j) * kn * LANES;
      for (int g = 0; g < kn; ++g) {
        lanes_t b0v, b1v;
        b0v = load_lanes(nl.B0 + static_cast<idx>(g) * LANES);
        b1v = load_lanes(b1 + static_cast<idx>(g) * LANES);
        bt[g] = b0v - s * b1v;
      }
    } else if (kn == 1) {  // one group (DANSS's total normalisation): the same sum and square, in registers
      lanes_t acc;
      if (pre != nullptr) {
        acc = pre[e];
      } else {
        const double* m = nl.mug + static_cast<idx>(p) * nl.n;
        acc = zero + nl.prior;
        for (int i = 0; i < nl.n; ++i) acc += m[i] * load_lanes(nl.Y + static_cast<idx>(i) * LANES);
      }
      lanes_t t = zero, sq = zero;
      t += nl.L[p] * acc;
      sq += t * t;
      lanes_t q;
      q = load_lanes(nl.Q);
      v += q - sq;
      continue;
    } else {
      for (int g = 0; g < kn; ++g) bt[g] = zero + nl.prior;
      const double* m = nl.mug + static_cast<idx>(p) * nl.n;
      for (int i = 0; i < nl.n; ++i) {
        lanes_t yv;
        yv = load_lanes(nl.Y + static_cast<idx>(i) * LANES);
        bt[nl.gid[i]] += m[i] * yv;
      }
    }
    const double* L = nl.L + static_cast<idx>(p) * (static_cast<idx>(kn) * (kn + 1) / 2);
    lanes_t sq = zero;
    idx o = 0;
    for (int a = 0; a < kn; ++a) {
      lanes_t t = zero;
      for (int c = 0; c <= a; ++c) t += L[o++] * bt[c];
      sq += t * t;
    }
    lanes_t q;
    q = load_lanes(nl.Q);
    v += q - sq;
  }
  return v;
}

// rest_value's sums prior + sum_i mu_p,i y_i of a one-group general norm experiment at four
// consecutive points p0 .. p0 + 3 at once (four independent chains; each point's operations and
// their order are rest_value's, so the sums are bit-identical).
FCMLC_AI void one_group_sums4(const NormLane& nl, std::int64_t p0, lanes_t* out0, lanes_t* out1, lanes_t* out2,
                              lanes_t* out3) {
  const lanes_t zero = {};
  const int n = nl.n;
  const double* m0 = nl.mug + static_cast<idx>(p0) * n;
  const double *m1 = m0 + n, *m2 = m1 + n, *m3 = m2 + n;
  lanes_t a0 = zero + nl.prior, a1 = a0, a2 = a0, a3 = a0;
  for (int i = 0; i < n; ++i) {
    const lanes_t y = load_lanes(nl.Y + static_cast<idx>(i) * LANES);
    a0 += m0[i] * y;
    a1 += m1[i] * y;
    a2 += m2[i] * y;
    a3 += m3[i] * y;
  }
  *out0 = a0, *out1 = a1, *out2 = a2, *out3 = a3;
}

// The full-grid scan of LANES toys when some experiment is not linear in s2: at every grid
// point p = j * nu + u, v = lin_value(s2[u], G_j, N_j) + sum over the non-linear experiments e of
// |r_e - m_e(p)|^2, then the running minimum (ties: lowest p) and the value at the true point pt.
// All lanes at once (the grid's m_e(p) are read once for LANES toys); every lane performs the
// scalar loop's operations in the same order, so the result is that of the scalar loop.
FCMLC_CLONES void general_lanes(int nd, int nu, const double* __restrict s2, const double* __restrict gsum,
                                const double* __restrict nsum, int n_gen, const double* const* rls,
                                const double* const* ms, const int* ks, int n_norm, const NormLane* nls,
                                double* crow_buf, std::int64_t pt, double* best, std::int64_t* bp, double* vt) {
  const lanes_t zero = {};
  for (int l = 0; l < LANES; ++l) {
    best[l] = std::numeric_limits<double>::infinity();
    bp[l] = -1;
    vt[l] = 0.0;
  }
  for (int j = 0; j < nd; ++j) {
    lanes_t G;
    G = load_lanes(gsum + static_cast<idx>(j) * LANES);
    const lanes_t twoG = 2.0 * G;
    const double N = nsum[j];
    // the centred norm experiments' values on this row (their sum, in experiment order)
    lanes_t* crow = reinterpret_cast<lanes_t*>(crow_buf);
    bool any_centred = false;
    for (int e = 0; e < n_norm; ++e) {
      if (!nls[e].centred) continue;
      if (!any_centred)
        for (int u = 0; u < nu; ++u) crow[u] = zero;
      any_centred = true;
      centred_row(nls[e], j, nu, s2, crow);
    }
    for (int u = 0; u < nu; ++u) {
      const std::int64_t p = static_cast<std::int64_t>(j) * nu + u;
      lanes_t v = rest_value(j, p, s2[u], twoG, N, n_gen, rls, ms, ks, n_norm, nls, pt);
      if (any_centred && p != pt) v += crow[u];
      for (int l = 0; l < LANES; ++l) {
        if (p == pt) vt[l] = v[l];
        take_min(v[l], p, best[l], bp[l]);
      }
    }
  }
}

// Centred norm experiments that general_lanes_pruned handles at most (per-row norms on the stack).
constexpr int PRUNE_MAX_CENTRED = 8;
// Norm experiments up to which pass A computes one-group sums four points at a time.
constexpr int PRUNE_MAX_NORM = 16;

// A block of CENTRED_BLOCK points of a row in the order of pass B (general_lanes_pruned).
struct BlockKey {
  double key;
  std::int64_t blk;  // j * blocks per row + block
};

// general_lanes with grid points skipped that provably cannot be the minimum; the result
// (best value, its index with the tie rule, the value at pt) is bit-identical to general_lanes.
// Pass A: per point p, base(p) = rest_value (exact) and a lower bound on the computed value
// base + sum_e centred_e(p) of each lane: with c = c0 - s c1 (float32 c0, c1 of the toy),
//   computed |L_p^-1 c|^2 (float32) <= K_p ((1 + 2e-6) |c|^2 + 7e-8 (|c0|^2 + s^2 |c1|^2)),
// where |c|^2 = n0 - 2 s n01 + s^2 n1 from three float64 row sums (O(1) per point). The float32
// c_t = c0 - s c1 the kernel forms has |c_t - c| <= u |c| + 2.01 u s |c1| (u = 2^-24), so
// |c_t|^2 <= (1 + 1e-6)(1 + u)^2 |c|^2 + 1e6 (2.01 u)^2 s^2 |c1|^2: the two terms above, which
// also cover the float64 rounding of n0, n01, n1 and |c|^2 (~1e-14 (n0 + s^2 n1)); K_p
// (set_prune_factors) covers |L_p^-1|_2^2 of the float32 factor and the float32 rounding of the
// quadratic form. With a reference R_j for the row (set_prune_factors with ref; rows whose K_p
// bound explodes near singular G'), the smaller of that bound and
//   A_p ((1 + 1e-6) |r|^2 + 2e-13 (m0 + s^2 m1) + 1e-20 |R_j|_F^2 (n0 + s^2 n1))
//     + B_p (|c|^2 + 1e-13 (n0 + s^2 n1)) + 7e-8 K_p (n0 + s^2 n1),
// |r|^2 = m0 - 2 s m01 + s^2 m1 from the float64 r0 = R_j c0, r1 = R_j c1 of the row: the computed
// float32 form is <= (1 + g) |Lf c_t|^2 + g |Lf|_F^2 |c_t|^2 (prune_factors), |Lf c|^2 <= alpha_p
// |R_j c|^2 (A_p = (1 + g)(1 + 1e-6) alpha_p plus the float64 error of alpha_p, B_p = g (1 + 1e-6)
// |Lf|_F^2: prune_reference), c_t = c + delta as above (the K_p term, 1 + 1/eta = 1e6), and the
// float64 r0, r1 and their sums err by <= (kn + 4) 2^-53 of |R_j| |c| (the 2e-13 and 1e-20 terms).
// lbm(p) = bound - (1e-10 (sum of the magnitudes of the float64 terms) + 1e-9)
// covers the float64 rounding of both the bound and the computed value. Pass B: the exact value
// at pt, then at the point of smallest lbm of each lane, then every block of up to
// CENTRED_BLOCK points of a row with lbm(p) <= best in some lane, the sixteen of smallest
// lbm - best first (lbm(p) > best[l] for every lane of every point of the block: skipped; their
// computed values exceed best >= the final minimum; otherwise the whole block is computed and its
// points that need it enter the minimum). A computed point has exactly general_lanes' operations
// (base + crow), and take_min does not depend on the order of the points, so the result is that
// of the full scan.
FCMLC_CLONES void general_lanes_pruned(int nd, int nu, const double* __restrict s2, const double* __restrict gsum,
                                       const double* __restrict nsum, int n_gen, const double* const* rls,
                                       const double* const* ms, const int* ks, int n_norm, const NormLane* nls,
                                       double* crow_buf, std::int64_t pt, double* best, std::int64_t* bp,
                                       double* vt, double* base_buf, double* lbm_buf, double* rx_buf,
                                       BlockKey* order_buf, std::int64_t* n_eval) {
  const lanes_t zero = {};
  lanes_t* base = reinterpret_cast<lanes_t*>(base_buf);
  lanes_t* lbm = reinterpret_cast<lanes_t*>(lbm_buf);
  lanes_t* crow = reinterpret_cast<lanes_t*>(crow_buf);
  int cen[PRUNE_MAX_CENTRED];
  int nc = 0;
  for (int e = 0; e < n_norm; ++e)
    if (nls[e].centred) cen[nc++] = e;
  auto lane_abs = [](lanes_t a) {
    lanes_t r;
    for (int l = 0; l < 4; ++l) {
      r.lo[l] = std::fabs(a.lo[l]);
      r.hi[l] = std::fabs(a.hi[l]);
    }
    return r;
  };
  bool one[PRUNE_MAX_NORM] = {};
  int n_one = 0;
  if (n_norm <= PRUNE_MAX_NORM)
    for (int e = 0; e < n_norm; ++e)
      if (!nls[e].linear && nls[e].kn == 1) one[e] = true, ++n_one;
  lanes_t pre4[4][PRUNE_MAX_NORM];
  // pass A
  for (int j = 0; j < nd; ++j) {
    lanes_t G;
    G = load_lanes(gsum + static_cast<idx>(j) * LANES);
    const lanes_t twoG = 2.0 * G;
    const double N = nsum[j];
    lanes_t n0[PRUNE_MAX_CENTRED], n01[PRUNE_MAX_CENTRED], n1[PRUNE_MAX_CENTRED];
    lanes_t cn[PRUNE_MAX_CENTRED], ra[PRUNE_MAX_CENTRED], rb[PRUNE_MAX_CENTRED];
    lanes_t acn[PRUNE_MAX_CENTRED], ara[PRUNE_MAX_CENTRED], arb[PRUNE_MAX_CENTRED];
    lanes_t m0[PRUNE_MAX_CENTRED], m01[PRUNE_MAX_CENTRED], m1[PRUNE_MAX_CENTRED];
    lanes_t u0c[PRUNE_MAX_CENTRED], u01c[PRUNE_MAX_CENTRED], u1c[PRUNE_MAX_CENTRED];
    lanes_t p0c[PRUNE_MAX_CENTRED], p01c[PRUNE_MAX_CENTRED], p1c[PRUNE_MAX_CENTRED];
    lanes_t q0c[PRUNE_MAX_CENTRED], q01c[PRUNE_MAX_CENTRED], q1c[PRUNE_MAX_CENTRED];
    lanes_t t0c[PRUNE_MAX_CENTRED], t1c[PRUNE_MAX_CENTRED];
    double fr[PRUNE_MAX_CENTRED];
    for (int i = 0; i < nc; ++i) {
      const NormLane& nl = nls[cen[i]];
      const int kn = nl.kn;
      const flanes_t* c0 = reinterpret_cast<const flanes_t*>(nl.C0 + static_cast<idx>(j) * kn * LANES);
      const flanes_t* c1 = reinterpret_cast<const flanes_t*>(nl.C1 + static_cast<idx>(j) * kn * LANES);
      lanes_t a = zero, b = zero, c = zero;
      for (int g = 0; g < kn; ++g) {
        const lanes_t x0 = to_double(c0[g]), x1 = to_double(c1[g]);
        a += x0 * x0;
        b += x0 * x1;
        c += x1 * x1;
      }
      n0[i] = a, n01[i] = b, n1[i] = c;
      // the reference bound: r0 = R_j c0, r1 = R_j c1 (float64), m0 = |r0|^2, m01 = r0.r1, m1 = |r1|^2
      fr[i] = nl.Rr != nullptr ? nl.FR[j] : -1.0;
      if (fr[i] >= 0.0) {
        const double* R = nl.Rr + static_cast<idx>(j) * kn * (kn + 1) / 2;
        lanes_t* x0 = reinterpret_cast<lanes_t*>(rx_buf);
        lanes_t* x1 = x0 + kn;
        for (int g = 0; g < kn; ++g) x0[g] = to_double(c0[g]), x1[g] = to_double(c1[g]);
        lanes_t s0 = zero, s01 = zero, s1 = zero;
        idx o = 0;
        for (int g = 0; g < kn; ++g) {
          lanes_t t0 = zero, t1 = zero;
          for (int h = 0; h <= g; ++h, ++o) {
            t0 += R[o] * x0[h];
            t1 += R[o] * x1[h];
          }
          s0 += t0 * t0;
          s01 += t0 * t1;
          s1 += t1 * t1;
        }
        m0[i] = s0, m01[i] = s01, m1[i] = s1;
      }
      cn[i] = load_lanes(nl.CN);
      ra[i] = load_lanes(nl.RA + static_cast<idx>(j) * LANES);
      rb[i] = load_lanes(nl.RB + static_cast<idx>(j) * LANES);
      acn[i] = lane_abs(cn[i]), ara[i] = lane_abs(ra[i]), arb[i] = lane_abs(rb[i]);
      // the bounds' coefficients of 1, s, s^2 (each bound's terms regrouped by power of s)
      u0c[i] = (1.0 + 2e-6 + 7e-8) * n0[i], u01c[i] = (2.0 + 4e-6) * n01[i], u1c[i] = (1.0 + 2e-6 + 7e-8) * n1[i];
      if (fr[i] >= 0.0) {
        p0c[i] = (1.0 + 1e-6 + 2e-13) * m0[i] + (1e-20 * fr[i]) * n0[i];
        p01c[i] = (2.0 + 2e-6) * m01[i];
        p1c[i] = (1.0 + 1e-6 + 2e-13) * m1[i] + (1e-20 * fr[i]) * n1[i];
        q0c[i] = (1.0 + 1e-13) * n0[i], q01c[i] = 2.0 * n01[i], q1c[i] = (1.0 + 1e-13) * n1[i];
        t0c[i] = 7e-8 * n0[i], t1c[i] = 7e-8 * n1[i];
      }
    }
    lanes_t cn_sum = zero, ra_sum = zero, rb_sum = zero, acn_sum = zero, ara_sum = zero, arb_sum = zero;
    for (int i = 0; i < nc; ++i) {
      cn_sum += cn[i], ra_sum += ra[i], rb_sum += rb[i];
      acn_sum += acn[i], ara_sum += ara[i], arb_sum += arb[i];
    }
    for (int u = 0; u < nu; ++u) {
      const std::int64_t p = static_cast<std::int64_t>(j) * nu + u;
      const double s = s2[u];
      // one-group general norm experiments (DANSS): their sums four points at a time
      const int q4 = u % 4;
      if (q4 == 0 && n_one > 0 && u + 4 <= nu) {
        for (int e = 0; e < n_norm; ++e)
          if (one[e]) one_group_sums4(nls[e], p, &pre4[0][e], &pre4[1][e], &pre4[2][e], &pre4[3][e]);
      }
      const bool use_pre = n_one > 0 && u - q4 + 4 <= nu;
      const lanes_t v = rest_value(j, p, s, twoG, N, n_gen, rls, ms, ks, n_norm, nls, pt,
                                   use_pre ? pre4[q4] : nullptr);
      base[p] = v;
      const double ss = s * s;
      // the centred experiments' float64 terms sum_i chi2_null_i + s RA_i + s^2 RB_i at once (the
      // rounding of this regrouping is covered by the margin 1e-10 mag below)
      lanes_t lb = v + (cn_sum + s * (ra_sum + s * rb_sum));
      lanes_t mag = lane_abs(v) + (acn_sum + s * (ara_sum + s * arb_sum));
      for (int i = 0; i < nc; ++i) {
        const double K = nls[cen[i]].Kb[p];
        // K_p ((1 + 2e-6) |c|^2 + 7e-8 (n0 + s^2 n1)) with |c|^2 = n0 - 2 s n01 + s^2 n1
        lanes_t bnd = (ss * K) * (u0c[i] - s * u01c[i] + ss * u1c[i]);
        if (fr[i] >= 0.0) {  // the reference bound, where it is smaller:
          // A_p ((1 + 1e-6) |r|^2 + 2e-13 (m0 + s^2 m1) + 1e-20 |R|_F^2 (n0 + s^2 n1))
          //   + B_p (|c|^2 + 1e-13 (n0 + s^2 n1)) + 7e-8 K_p (n0 + s^2 n1), |r|^2 = m0 - 2 s m01 + s^2 m1
          const NormLane& nl = nls[cen[i]];
          const lanes_t rb2 = nl.Ab[p] * (p0c[i] - s * p01c[i] + ss * p1c[i]) +
                              nl.Bb[p] * (q0c[i] - s * q01c[i] + ss * q1c[i]) + K * (t0c[i] + ss * t1c[i]);
          const lanes_t b2 = ss * rb2;
          bnd.lo = b2.lo < bnd.lo ? b2.lo : bnd.lo;
          bnd.hi = b2.hi < bnd.hi ? b2.hi : bnd.hi;
        }
        lb = lb - bnd;
        mag += lane_abs(bnd);
      }
      lbm[p] = lb - ((1e-10 * mag) + 1e-9);
    }
  }
  // pass B: the true point, then each lane's most promising point
  std::int64_t evaluated = 1;
  for (int l = 0; l < LANES; ++l) {
    vt[l] = base[pt][l];
    best[l] = vt[l];
    bp[l] = pt;
  }
  const std::int64_t np = static_cast<std::int64_t>(nd) * nu;
  std::int64_t cand[LANES];
  {  // per lane the first point of smallest lbm (p != pt), four lanes per vector
    typedef std::int64_t i4_t __attribute__((vector_size(4 * sizeof(std::int64_t)), aligned(sizeof(std::int64_t))));
    const double inf = std::numeric_limits<double>::infinity();
    d4_t mlo = {inf, inf, inf, inf}, mhi = mlo;
    i4_t clo = {-1, -1, -1, -1}, chi = clo;
    for (std::int64_t p = 0; p < np; ++p) {
      if (p == pt) continue;
      const lanes_t& v = lbm[p];
      const i4_t pv = {p, p, p, p};
      const i4_t klo = v.lo < mlo, khi = v.hi < mhi;
      mlo = klo ? v.lo : mlo, mhi = khi ? v.hi : mhi;
      clo = klo ? pv : clo, chi = khi ? pv : chi;
    }
    for (int l = 0; l < 4; ++l) cand[l] = clo[l], cand[l + 4] = chi[l];
  }
  for (int l = 0; l < LANES; ++l) {
    const std::int64_t p = cand[l];
    bool seen = p < 0;
    for (int m = 0; m < l && !seen; ++m) seen = cand[m] == p;
    if (seen) continue;
    const int j = static_cast<int>(p / nu), u = static_cast<int>(p % nu);
    crow[u] = zero;
    for (int i = 0; i < nc; ++i) centred_points(nls[cen[i]], j, nu, u, 1, s2, crow);
    const lanes_t v = base[p] + crow[u];
    for (int m = 0; m < LANES; ++m) take_min(v[m], p, best[m], bp[m]);
    ++evaluated;
  }
  // pass B: every block with a point that may be the minimum of some lane, the most promising
  // first (smallest lbm - best over its points and lanes): the running minima fall early and
  // later blocks are skipped more often. take_min does not depend on the order of the points.
  // A block with no point to compute now has none later either (best only decreases).
  const int nblk_row = (nu + CENTRED_BLOCK - 1) / CENTRED_BLOCK;
  std::int64_t n_blk = 0;
  {
    lanes_t bst;
    bst = load_lanes(best);
    for (int j = 0; j < nd; ++j) {
      for (int b = 0; b < nblk_row; ++b) {
        const int u0 = b * CENTRED_BLOCK, n = std::min(CENTRED_BLOCK, nu - u0);
        const std::int64_t p0 = static_cast<std::int64_t>(j) * nu + u0;
        const double inf = std::numeric_limits<double>::infinity();
        d4_t kmin = {inf, inf, inf, inf};
        for (int q = 0; q < n; ++q) {
          if (p0 + q == pt) continue;
          const lanes_t d = lbm[p0 + q] - bst;
          kmin = d.lo < kmin ? d.lo : kmin;
          kmin = d.hi < kmin ? d.hi : kmin;
        }
        double key = std::min(std::min(kmin[0], kmin[1]), std::min(kmin[2], kmin[3]));
        bool any = false;  // the need test of the loop below, against the current minima
        for (int q = 0; q < n && !any; ++q) {
          if (p0 + q == pt) continue;
          for (int l = 0; l < LANES; ++l)
            if (!(lbm[p0 + q][l] > best[l])) any = true;
        }
        if (!any) continue;
        order_buf[n_blk].key = key;
        order_buf[n_blk].blk = static_cast<std::int64_t>(j) * nblk_row + b;
        ++n_blk;
      }
    }
  }
  // Only the most promising few need to come first (they bring each lane's minimum close to its
  // final value); a full sort costs more than it saves.
  {
    const auto less = [](const BlockKey& a, const BlockKey& b) {
      return a.key < b.key || (a.key == b.key && a.blk < b.blk);
    };
    constexpr std::int64_t FIRST = 16;
    if (n_blk > FIRST) {
      std::nth_element(order_buf, order_buf + FIRST, order_buf + n_blk, less);
      std::sort(order_buf, order_buf + FIRST, less);
    } else {
      std::sort(order_buf, order_buf + n_blk, less);
    }
  }
  for (std::int64_t ib = 0; ib < n_blk; ++ib) {
    const int j = static_cast<int>(order_buf[ib].blk / nblk_row);
    const int u0 = static_cast<int>(order_buf[ib].blk % nblk_row) * CENTRED_BLOCK;
    {
      const int n = std::min(CENTRED_BLOCK, nu - u0);
      const std::int64_t p0 = static_cast<std::int64_t>(j) * nu + u0;
      bool need[CENTRED_BLOCK] = {};
      int n_need = 0;
      for (int q = 0; q < n; ++q) {
        if (p0 + q == pt) continue;
        const lanes_t& b = lbm[p0 + q];
        for (int l = 0; l < LANES; ++l)
          if (!(b[l] > best[l])) need[q] = true;
        n_need += need[q];
      }
      if (n_need == 0) continue;
      // the whole block even for one point: four independent accumulation chains cost about what
      // one chain costs alone (a single point is latency-bound), and the per-point operations are
      // the same
      for (int q = 0; q < n; ++q) crow[u0 + q] = zero;
      for (int i = 0; i < nc; ++i) centred_points(nls[cen[i]], j, nu, u0, n, s2, crow);
      evaluated += n;
      for (int q = 0; q < n; ++q) {
        const std::int64_t p = p0 + q;
        if (p == pt || !need[q]) continue;
        const lanes_t v = base[p] + crow[u0 + q];
        for (int l = 0; l < LANES; ++l) take_min(v[l], p, best[l], bp[l]);
      }
    }
  }
  *n_eval += evaluated;
}

std::vector<double> copy_vec(const double* p, idx n) { return std::vector<double>(p, p + n); }

// The kernel behind fcmlc::Chi2Kernel (see chi2.hpp): raw row-major arrays in, arguments
// checked by the caller.
class Chi2Core {
 public:
  Chi2Core(const double* s2, int n_ue4, int n_dm2) {
    s2_ = copy_vec(s2, n_ue4);
    nu_ = static_cast<int>(s2_.size());
    nd_ = n_dm2;
    order_.resize(nu_);
    for (int i = 0; i < nu_; ++i) order_[i] = i;
    std::stable_sort(order_.begin(), order_.end(), [&](int a, int b) { return s2_[a] < s2_[b]; });
    sorted_.resize(nu_);
    for (int i = 0; i < nu_; ++i) sorted_[i] = s2_[order_[i]];
    index_.build(sorted_);
    distinct_ = true;
    for (int i = 1; i < nu_; ++i)
      if (!(sorted_[i] > sorted_[i - 1])) distinct_ = false;
    nsum_.assign(nd_, 0.0);
    ninv_.assign(nd_, 0.0);
  }

  bool centred() const { return centred_; }
  void set_centred(bool c) { centred_ = c; }
  bool prune() const { return prune_; }
  void set_prune(bool c) { prune_ = c; }
  // Pruning statistics of the FC toys since the last reset: (grid points computed, grid points
  // scanned), both per LANES toys.
  std::pair<std::int64_t, std::int64_t> prune_stats() const { return {n_eval_.load(), n_scan_.load()}; }
  void reset_prune_stats() { n_eval_ = 0, n_scan_ = 0; }
  // K_p (n_points) of a centred experiment (see general_lanes_pruned): for every p and every
  // float32 vector c, the computed float32 |L_p^-1 c|^2 <= K_p |c|^2. Without it (or with the
  // centred form off) that experiment's toys are not pruned.
  void set_prune_factors(int i, const double* K, const std::int64_t* ref, const double* A, const double* B) {
    Chi2Experiment& e = at(i);
    e.Kb = copy_vec(K, n_points());
    e.Rref.clear(), e.FR.clear(), e.Ab.clear(), e.Bb.clear();
    if (ref == nullptr) return;
    const idx kk = static_cast<idx>(e.kn) * (e.kn + 1) / 2;
    e.Rref.assign(static_cast<idx>(nd_) * kk, 0.0);
    e.FR.assign(nd_, -1.0);
    for (int j = 0; j < nd_; ++j) {
      if (ref[j] < 0) continue;
      const float* L = e.Lf.data() + (static_cast<idx>(j) * nu_ + ref[j]) * kk;
      double f = 0.0;
      for (idx o = 0; o < kk; ++o) {
        e.Rref[j * kk + o] = static_cast<double>(L[o]);
        f += e.Rref[j * kk + o] * e.Rref[j * kk + o];
      }
      e.FR[j] = f;
    }
    e.Ab = copy_vec(A, n_points());
    e.Bb = copy_vec(B, n_points());
  }
  int n_ue4() const { return nu_; }
  int n_dm2() const { return nd_; }
  std::int64_t n_points() const { return static_cast<std::int64_t>(nu_) * nd_; }
  int n_bins() const { return n_bins_; }
  int n_experiments() const { return static_cast<int>(ex_.size()); }
  bool linear_only() const { return n_general_ == 0 && n_norm_ == 0; }
  int toy_width() const { return k_total_; }
  std::vector<int> dims() const {
    std::vector<int> d;
    for (const auto& e : ex_) d.push_back(e.norm ? e.kw : e.k);
    return d;
  }
  std::vector<bool> linear() const {
    std::vector<bool> d;
    for (const auto& e : ex_) d.push_back(e.linear);
    return d;
  }
  std::vector<std::string> generators() const {
    std::vector<std::string> g;
    for (const auto& e : ex_)
      g.push_back(e.gen == Chi2Generator::gaussian ? "gaussian" : e.gen == Chi2Generator::pulls ? "pulls" : "none");
    return g;
  }
  std::vector<int> norm_groups_count() const {
    std::vector<int> d;
    for (const auto& e : ex_) d.push_back(e.kn);
    return d;
  }

  const Chi2Experiment& experiment(int i) const {
    if (!(i >= 0 && i < static_cast<int>(ex_.size())))
      throw std::invalid_argument("experiment index out of range: " + std::to_string(i));
    return ex_[i];
  }

  // Experiment with k_norm multiplicative normalisation groups (see chi2.hpp): Aw (kw, n) is the
  // projection at the null expectation (whiten() only), Ci = C^+ (n, n), groups (n) in 0..kn-1,
  // prior = 1/sigma^2 (0: free), Lfac (n_points, kn(kn+1)/2) the packed L_p^-1, and either the
  // deficits D (n_dm2, n) (linear) or the expectations mu_grid (n_points, n) (general).
  int add_norm(const std::string& name, const double* Aw, int kw, const double* N0, int n_bins, const double* Ci,
               const std::int64_t* groups, double prior, const double* Lfac, bool linear, const double* table) {
    Chi2Experiment e = base_experiment(name, Aw, kw, N0, n_bins);
    e.Aw = std::move(e.A);
    e.A.clear();
    e.kw = e.k;
    e.k = 0;
    e.norm = true;
    e.linear = linear;
    const int n = e.n;
    int kn = 0;
    e.gid.resize(n);
    for (int i = 0; i < n; ++i) {
      const std::int64_t g = groups[i];
      e.gid[i] = static_cast<int>(g);
      kn = std::max(kn, static_cast<int>(g) + 1);
    }
    e.kn = kn;
    e.prior = prior;
    e.Ci = copy_vec(Ci, static_cast<idx>(n) * n);
    const idx kk = static_cast<idx>(kn) * (kn + 1) / 2;
    e.Lfac = copy_vec(Lfac, static_cast<idx>(n_points()) * kk);
    if (linear) {
      e.Draw = copy_vec(table, static_cast<idx>(nd_) * n);
      build_centred(e);
      build_interleaved(e);
    } else {
      e.mug = copy_vec(table, static_cast<idx>(n_points()) * n);
    }
    ++n_norm_;
    return push(std::move(e));
  }

  int add_linear(const std::string& name, const double* A, int k, const double* N0, int n_bins, const double* D) {
    Chi2Experiment e = base_experiment(name, A, k, N0, n_bins);
    e.linear = true;
    e.d.assign(static_cast<idx>(nd_) * e.k, 0.0);
    e.dn.assign(nd_, 0.0);
    const double* Dp = D;
    for (int j = 0; j < nd_; ++j) {
      matvec(e.A.data(), Dp + static_cast<idx>(j) * e.n, e.k, e.n, e.d.data() + static_cast<idx>(j) * e.k);
      double s = 0.0;
      for (int a = 0; a < e.k; ++a) s += e.d[static_cast<idx>(j) * e.k + a] * e.d[static_cast<idx>(j) * e.k + a];
      e.dn[j] = s;
      nsum_[j] += s;
      ninv_[j] = nsum_[j] > 0.0 ? 1.0 / nsum_[j] : 0.0;
    }
    return push(std::move(e));
  }

  int add_general(const std::string& name, const double* A, int k, const double* N0, int n_bins,
                  const double* mu_grid) {
    Chi2Experiment e = base_experiment(name, A, k, N0, n_bins);
    e.linear = false;
    const std::int64_t np_ = n_points();
    e.m.assign(static_cast<idx>(np_) * e.k, 0.0);
    std::vector<double> y(e.n);
    for (std::int64_t p = 0; p < np_; ++p)
      whiten_one(e, mu_grid + static_cast<idx>(p) * e.n, y.data(), e.m.data() + static_cast<idx>(p) * e.k);
    ++n_general_;
    return push(std::move(e));
  }

  void set_gaussian_generator(int i, std::uint64_t stream, const double* Ft, int kg, double norm_sigma) {
    Chi2Experiment& e = at(i);
    e.gen = Chi2Generator::gaussian;
    e.stream = stream;
    e.kg = kg;
    e.gen_sigma = norm_sigma;
    const double* F = Ft;
    if (e.norm) {  // toys formed as data vectors x = mu (1 + sigma E w) + F z, then scanned as data
      e.Fm.assign(static_cast<idx>(e.n) * e.kg, 0.0);
      for (int g = 0; g < e.kg; ++g)
        for (int b = 0; b < e.n; ++b) e.Fm[static_cast<idx>(b) * e.kg + g] = F[static_cast<idx>(g) * e.n + b];
      e.M.clear(), e.G.clear();
      e.J.clear(), e.Lp.clear(), e.lo.clear(), e.sigma.clear();
      return;
    }
    e.M.assign(static_cast<idx>(e.k) * e.kg, 0.0);
    for (int a = 0; a < e.k; ++a)
      for (int g = 0; g < e.kg; ++g) {
        const double* arow = e.A.data() + static_cast<idx>(a) * e.n;
        const double* frow = F + static_cast<idx>(g) * e.n;
        double s = 0.0;
        for (int b = 0; b < e.n; ++b) s += arow[b] * frow[b];
        e.M[static_cast<idx>(a) * e.kg + g] = s;
      }
    e.G.clear();
    if (e.linear) {
      e.G.assign(static_cast<idx>(nd_) * e.kg, 0.0);
      for (int j = 0; j < nd_; ++j)
        for (int g = 0; g < e.kg; ++g) {
          double s = 0.0;
          for (int a = 0; a < e.k; ++a) s += e.d[static_cast<idx>(j) * e.k + a] * e.M[static_cast<idx>(a) * e.kg + g];
          e.G[static_cast<idx>(j) * e.kg + g] = s;
        }
    }
    e.J.clear(), e.Lp.clear(), e.lo.clear(), e.sigma.clear();
  }

  void set_pull_generator(int i, std::uint64_t stream, const double* J, int n_pulls, const double* Lp,
                          const double* lo, const double* sigma) {
    Chi2Experiment& e = at(i);
    const idx p = n_pulls;
    e.gen = Chi2Generator::pulls;
    e.stream = stream;
    e.np = n_pulls;
    e.J = copy_vec(J, static_cast<idx>(e.n) * p);
    e.Lp = copy_vec(Lp, p * p);
    e.lo = copy_vec(lo, p);
    e.sigma = copy_vec(sigma, e.n);
    e.M.clear(), e.G.clear();
    e.kg = 0;
  }

  // ---- whitening of data vectors (for tests and the Python layer) --------------------

  int whiten_width() const {
    int width = 0;
    for (const auto& e : ex_) width += e.norm ? e.kw : e.k;
    return width;
  }

  void whiten(const double* x, sidx nx, double* o) const {
    const int width = whiten_width();
    std::vector<double> y(max_n_);
    for (sidx i = 0; i < nx; ++i) {
      int off = 0;
      for (const auto& e : ex_) {
        double* oi = o + i * width + off;
        const double* xi = x + i * n_bins_ + e.offset;
        if (e.norm) {  // Aw (x - N0): the projection at the null expectation
          for (int b = 0; b < e.n; ++b) y[b] = xi[b] - e.N0[b];
          matvec(e.Aw.data(), y.data(), e.kw, e.n, oi);
          off += e.kw;
        } else {
          whiten_one(e, xi, y.data(), oi);
          off += e.k;
        }
      }
    }
  }

  // ---- chi2 scan ---------------------------------------------------------------------

  void scan(const double* xp, sidx nx, int threads, double* c, double* mn, std::int64_t* am) const {
    const int nt = static_cast<int>(std::min<sidx>(threads, std::max<sidx>(nx, 1)));
    const std::int64_t np_ = n_points();
    ExceptionCapture ex;
#pragma omp parallel num_threads(nt)
    {
      std::vector<double> y(max_n_), r(std::max(k_total_, 1)), g(nd_), gsum(nd_);
      NormScan ns(*this);
#pragma omp for schedule(static)
      for (sidx i = 0; i < nx; ++i) {
        ex.run([&] {
          scan_one(xp + i * n_bins_, y.data(), r.data(), g.data(), gsum.data(), ns, c + i * np_, mn[i], am[i]);
        });
      }
    }
    ex.rethrow();
  }

  // ---- Feldman-Cousins toys ----------------------------------------------------------

  void fc_toys(const std::int64_t* pid, sidx npt, const double* const* mu, sidx n_toys, std::uint64_t seed,
               std::int64_t toy_offset, int nt, double* dp, std::int64_t* bp) const {
    const std::vector<const double*> mup(mu, mu + ex_.size());
    const sidx blocks = (n_toys + TOY_BLOCK - 1) / TOY_BLOCK;
    const long long tasks = static_cast<long long>(npt) * blocks;
    const int nt_used = static_cast<int>(std::min<long long>(nt, tasks));
    ExceptionCapture ex;
#pragma omp parallel num_threads(nt_used)
    {
      ToyScratch s(*this);
      long long last_point = -1;
#pragma omp for schedule(dynamic, 1)
      for (long long t = 0; t < tasks; ++t) {
        ex.run([&] {
          const long long i = t / blocks;
          const sidx b = t % blocks;
          if (i != last_point) {
            prepare_point(s, mup, i);
            last_point = i;
          }
          const sidx t0 = b * TOY_BLOCK, t1 = std::min<sidx>(n_toys, t0 + TOY_BLOCK);
          for (sidx q = t0; q < t1; q += LANES) {
            std::uint64_t real[LANES];
            for (int l = 0; l < LANES; ++l)
              real[l] = static_cast<std::uint64_t>(toy_offset + std::min<sidx>(q + l, t1 - 1));
            double dl[LANES];
            std::int64_t bl[LANES];
            toy_lanes(s, mup, i, static_cast<std::uint64_t>(pid[i]), real, seed, dl, bl);
            for (int l = 0; l < LANES && q + l < t1; ++l) {
              dp[i * n_toys + q + l] = dl[l];
              if (bp) bp[i * n_toys + q + l] = bl[l];
            }
          }
        });
      }
    }
    ex.rethrow();
  }

  // The whitened, nuisance-projected toys r (n_points, n_toys, sum_e k_e) exactly as the
  // FC loop forms them (gaussian: c + M z; pulls: A (x - N0) of pull_realization's x).
  void whitened_toys(const std::int64_t* pid, sidx npt, const double* const* mu, sidx n_toys, std::uint64_t seed,
                     std::int64_t toy_offset, int nt, double* o) const {
    const int nt_used = static_cast<int>(std::min<sidx>(nt, std::max<sidx>(npt, 1)));
    const std::vector<const double*> mup(mu, mu + ex_.size());
    ExceptionCapture ex;
#pragma omp parallel num_threads(nt_used)
    {
      ToyScratch s(*this);
#pragma omp for schedule(static)
      for (sidx i = 0; i < npt; ++i) {
        ex.run([&] {
          prepare_point(s, mup, i);
          for (sidx q = 0; q < n_toys; q += LANES) {
            std::uint64_t real[LANES];
            for (int l = 0; l < LANES; ++l)
              real[l] = static_cast<std::uint64_t>(toy_offset + std::min<sidx>(q + l, n_toys - 1));
            int off = 0;
            for (std::size_t e = 0; e < ex_.size(); ++e) {
              const Chi2Experiment& E = ex_[e];
              double* rl = s.rl[e].data();
              residual_lanes(s, E, e, mup[e] + i * E.n, static_cast<std::uint64_t>(pid[i]), real, seed, rl);
              for (int l = 0; l < LANES && q + l < n_toys; ++l)
                for (int a = 0; a < E.k; ++a)
                  o[(i * n_toys + q + l) * k_total_ + off + a] = rl[static_cast<idx>(a) * LANES + l];
              off += E.k;
            }
          }
        });
      }
    }
    ex.rethrow();
  }
 private:
  struct ToyScratch {
    std::vector<std::vector<double>> c, h, rl;  // per experiment: c (k), h (n_dm2), r lanes (k x LANES)
    std::vector<double> z, Z, gl, gsum, x, y, r, pull, w;
    // norm experiments: toy lanes x, y (n x LANES), q, b0', b1, scratch b' (see norm_toy_lanes)
    std::vector<std::vector<double>> nx, ny, nq, nb0, nb1, nbt;
    // centred form: beta0, chi2_null, row coefficients RA, RB, row vectors c0, c1, float scratch
    std::vector<std::vector<double>> nbeta, ncn, nra, nrb;
    std::vector<std::vector<float>> nc0, nc1, nct;
    std::vector<double> crow;  // nu x LANES: centred values of one dm2 row
    std::vector<double> pbase, plbm;  // pruning: n_points x LANES, base values and lower bounds
    std::vector<double> prx;          // pruning: 2 kn_max x LANES, one row's c0, c1 in float64
    std::vector<BlockKey> pord;       // pruning: the blocks of pass B in their order
    bool prune = false;
    std::vector<NormLane> nl;
    // the non-linear experiments for general_lanes: residual lanes, expectations m(p), widths k
    std::vector<const double*> grl, gm;
    std::vector<int> gk;
    explicit ToyScratch(const Chi2Core& K) {
      int kg_max = 1, n_max = 1, k_max = 1, p_max = 0, kn_max = 1;
      for (const auto& e : K.ex_) {
        const int kn = std::max(1, e.kn);
        kn_max = std::max(kn_max, kn);
        nx.emplace_back(e.norm ? static_cast<idx>(e.n) * LANES : 1);
        ny.emplace_back(e.norm ? static_cast<idx>(e.n) * LANES : 1);
        nq.emplace_back(LANES);
        nb0.emplace_back(static_cast<idx>(kn) * LANES);
        nb1.emplace_back(e.norm && e.linear ? static_cast<idx>(K.nd_) * kn * LANES : 1);
        nbt.emplace_back(static_cast<idx>(kn) * LANES);
        const bool cen = e.norm && e.centred && K.centred_;
        nbeta.emplace_back(cen ? static_cast<idx>(kn) * LANES : 1);
        ncn.emplace_back(LANES);
        nra.emplace_back(cen ? static_cast<idx>(K.nd_) * LANES : 1);
        nrb.emplace_back(cen ? static_cast<idx>(K.nd_) * LANES : 1);
        nc0.emplace_back(cen ? static_cast<idx>(K.nd_) * kn * LANES : 1);
        nc1.emplace_back(cen ? static_cast<idx>(K.nd_) * kn * LANES : 1);
        nct.emplace_back(static_cast<idx>(CENTRED_BLOCK) * kn * LANES);
        c.emplace_back(std::max(1, e.k));
        h.emplace_back(e.linear ? K.nd_ : 1);
        rl.emplace_back(static_cast<idx>(std::max(1, e.k)) * LANES);
        kg_max = std::max(kg_max, e.kg);
        n_max = std::max(n_max, e.n);
        k_max = std::max(k_max, e.k);
        p_max = std::max(p_max, e.np);
      }
      z.resize(kg_max);
      Z.resize(static_cast<idx>(kg_max) * LANES);
      gl.resize(static_cast<idx>(K.nd_) * LANES);
      gsum.resize(static_cast<idx>(K.nd_) * LANES);
      x.resize(n_max);
      y.resize(n_max);
      r.resize(k_max);
      pull.resize(2 * static_cast<idx>(p_max) + n_max);
      w.resize(kn_max);
      crow.resize(static_cast<idx>(K.nu_) * LANES);
      int n_cen = 0;
      bool factors = true;
      for (const auto& E : K.ex_)
        if (E.norm && E.centred && K.centred_) ++n_cen, factors = factors && !E.Kb.empty();
      prune = K.prune_ && n_cen > 0 && n_cen <= PRUNE_MAX_CENTRED && factors;
      if (prune) {
        pbase.resize(static_cast<idx>(K.n_points()) * LANES);
        plbm.resize(static_cast<idx>(K.n_points()) * LANES);
        prx.resize(2 * static_cast<idx>(kn_max) * LANES);
        pord.resize(static_cast<idx>(K.nd_) * ((K.nu_ + CENTRED_BLOCK - 1) / CENTRED_BLOCK));
      }
      for (std::size_t e = 0; e < K.ex_.size(); ++e) {
        const Chi2Experiment& E = K.ex_[e];
        if (!E.norm) continue;
        nl.push_back(NormLane{E.Lfac.data(), E.kn, E.n, E.linear, E.prior, E.gid.data(),
                              E.linear ? nullptr : E.mug.data(), nq[e].data(), nb0[e].data(), nb1[e].data(),
                              ny[e].data(), nbt[e].data(), E.centred && K.centred_, E.Lf.data(), ncn[e].data(),
                              nra[e].data(), nrb[e].data(), nc0[e].data(), nc1[e].data(), nct[e].data(),
                              E.Kb.empty() ? nullptr : E.Kb.data(), E.Rref.empty() ? nullptr : E.Rref.data(),
                              E.FR.data(), E.Ab.data(), E.Bb.data()});
      }
      for (std::size_t e = 0; e < K.ex_.size(); ++e) {
        if (K.ex_[e].linear || K.ex_[e].norm) continue;
        grl.push_back(rl[e].data());
        gm.push_back(K.ex_[e].m.data());
        gk.push_back(K.ex_[e].k);
      }
    }
  };

  std::vector<Chi2Experiment> ex_;
  std::vector<double> s2_, sorted_, nsum_, ninv_;
  std::vector<int> order_;
  SortedIndex index_;
  int nu_ = 0, nd_ = 0, n_bins_ = 0, k_total_ = 0, max_n_ = 1, n_general_ = 0, n_norm_ = 0;
  bool distinct_ = true;
  bool centred_ = true;  // use the centred float32 form where built (false: the float64 profile everywhere)
  bool prune_ = true;    // FC toys: skip grid points whose lower bound exceeds the running minimum
  mutable std::atomic<std::int64_t> n_eval_{0}, n_scan_{0};  // pruning: points computed / scanned

  Chi2Experiment base_experiment(const std::string& name, const double* A, int k, const double* N0, int n) const {
    Chi2Experiment e;
    e.name = name;
    e.n = n;
    e.k = k;
    e.A = copy_vec(A, static_cast<idx>(k) * n);
    e.N0 = copy_vec(N0, n);
    return e;
  }

  int push(Chi2Experiment&& e) {
    e.offset = n_bins_;
    n_bins_ += e.n;
    k_total_ += e.k;
    max_n_ = std::max(max_n_, e.n);
    ex_.push_back(std::move(e));
    return static_cast<int>(ex_.size()) - 1;
  }

  Chi2Experiment& at(int i) { return const_cast<Chi2Experiment&>(experiment(i)); }
  // The centred form of a linear norm experiment: with mu = N0 - s2 D_j,
  // G'(p) = G0 - s2 H_j + s2^2 G11_j, G0 = E^T diag(N0) C^+ diag(N0) E + prior I,
  // H_j = G01_j + G01_j^T, G01_j = E^T diag(N0) C^+ diag(D_j) E, G11_j = E^T diag(D_j) C^+ diag(D_j) E.
  // Stores G0^-1 (Cholesky), H_j, G11_j and the float32 L_p^-1; leaves e.centred false (exact
  // float64 path) when G0 is not numerically positive definite.
  void build_centred(Chi2Experiment& e) const {
    const int n = e.n, kn = e.kn;
    const idx kk2 = static_cast<idx>(kn) * kn;
    const double* Ci = e.Ci.data();
    std::vector<double> P(static_cast<idx>(n) * kn), G0(kk2, 0.0);
    auto group_sums = [&](const double* v) {  // P[i][h] = sum_{k in group h} Ci[i][k] v[k]
      std::fill(P.begin(), P.end(), 0.0);
      for (int i = 0; i < n; ++i)
        for (int k = 0; k < n; ++k) P[static_cast<idx>(i) * kn + e.gid[k]] += Ci[static_cast<idx>(i) * n + k] * v[k];
    };
    group_sums(e.N0.data());
    for (int i = 0; i < n; ++i)
      for (int h = 0; h < kn; ++h) G0[static_cast<idx>(e.gid[i]) * kn + h] += e.N0[i] * P[static_cast<idx>(i) * kn + h];
    for (int g = 0; g < kn; ++g) G0[static_cast<idx>(g) * kn + g] += e.prior;
    // Cholesky G0 = L L^T, then G0^-1 = L^-T L^-1
    std::vector<double> L(kk2, 0.0), Li(kk2, 0.0);
    for (int a = 0; a < kn; ++a) {
      for (int b = 0; b <= a; ++b) {
        double t = G0[static_cast<idx>(a) * kn + b];
        for (int c = 0; c < b; ++c) t -= L[static_cast<idx>(a) * kn + c] * L[static_cast<idx>(b) * kn + c];
        if (a == b) {
          if (!(t > 1e-12 * std::fabs(G0[static_cast<idx>(a) * kn + a])) || !std::isfinite(t)) return;
          L[static_cast<idx>(a) * kn + a] = std::sqrt(t);
        } else {
          L[static_cast<idx>(a) * kn + b] = t / L[static_cast<idx>(b) * kn + b];
        }
      }
    }
    for (int c = 0; c < kn; ++c) {  // column c of L^-1
      for (int a = c; a < kn; ++a) {
        double t = a == c ? 1.0 : 0.0;
        for (int b = c; b < a; ++b) t -= L[static_cast<idx>(a) * kn + b] * Li[static_cast<idx>(b) * kn + c];
        Li[static_cast<idx>(a) * kn + c] = t / L[static_cast<idx>(a) * kn + a];
      }
    }
    e.G0inv.assign(kk2, 0.0);
    for (int g = 0; g < kn; ++g)
      for (int h = 0; h < kn; ++h) {
        double t = 0.0;
        for (int a = std::max(g, h); a < kn; ++a) t += Li[static_cast<idx>(a) * kn + g] * Li[static_cast<idx>(a) * kn + h];
        e.G0inv[static_cast<idx>(g) * kn + h] = t;
      }
    e.Hrow.assign(static_cast<idx>(nd_) * kk2, 0.0);
    e.G11row.assign(static_cast<idx>(nd_) * kk2, 0.0);
    for (int j = 0; j < nd_; ++j) {
      const double* D = e.Draw.data() + static_cast<idx>(j) * n;
      double* H = e.Hrow.data() + static_cast<idx>(j) * kk2;
      double* G11 = e.G11row.data() + static_cast<idx>(j) * kk2;
      group_sums(D);
      for (int i = 0; i < n; ++i)
        for (int h = 0; h < kn; ++h) {
          const double ph = P[static_cast<idx>(i) * kn + h];
          H[static_cast<idx>(e.gid[i]) * kn + h] += e.N0[i] * ph;  // G01 (rows: N0 side)
          G11[static_cast<idx>(e.gid[i]) * kn + h] += D[i] * ph;
        }
      for (int g = 0; g < kn; ++g)  // H = G01 + G01^T
        for (int h = 0; h <= g; ++h) {
          const double t = H[static_cast<idx>(g) * kn + h] + H[static_cast<idx>(h) * kn + g];
          H[static_cast<idx>(g) * kn + h] = t;
          H[static_cast<idx>(h) * kn + g] = t;
        }
    }
    e.Lf.assign(e.Lfac.begin(), e.Lfac.end());
    e.centred = true;
  }

  // Point-interleaved copy of L_p^-1 for the scan (norm_points4): per row j and block b of four
  // s2 points, Lt[((j * nb + b) * kk + o) * 4 + q] = Lfac[(j * nu + 4 b + q) * kk + o].
  void build_interleaved(Chi2Experiment& e) const {
    const idx kk = static_cast<idx>(e.kn) * (e.kn + 1) / 2;
    const int nb = nu_ / 4;
    e.Lt.assign(static_cast<idx>(nd_) * nb * kk * 4, 0.0);
    for (int j = 0; j < nd_; ++j)
      for (int b = 0; b < nb; ++b)
        for (int q = 0; q < 4; ++q) {
          const double* src = e.Lfac.data() + (static_cast<idx>(j) * nu_ + 4 * b + q) * kk;
          double* dst = e.Lt.data() + (static_cast<idx>(j) * nb + b) * kk * 4 + q;
          for (idx o = 0; o < kk; ++o) dst[4 * o] = src[o];
        }
  }

  // Per data vector of a norm experiment: y = C^+ x, q = x.y + kn prior, b0' = E^T (N0 * y) + prior,
  // b1(j) = E^T (D_j * y) (linear). Every sum runs in ascending bin order.
  void norm_prepare(const Chi2Experiment& E, const double* x, double* y, double& q, double* b0, double* b1) const {
    const int n = E.n, kn = E.kn;
    matvec(E.Ci.data(), x, n, n, y);
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += x[i] * y[i];
    q = s + kn * E.prior;
    for (int g = 0; g < kn; ++g) b0[g] = E.prior;
    for (int i = 0; i < n; ++i) b0[E.gid[i]] += E.N0[i] * y[i];
    if (E.linear) {
      for (int j = 0; j < nd_; ++j) {
        double* bj = b1 + static_cast<idx>(j) * kn;
        const double* Dj = E.Draw.data() + static_cast<idx>(j) * n;
        for (int g = 0; g < kn; ++g) bj[g] = 0.0;
        for (int i = 0; i < n; ++i) bj[E.gid[i]] += Dj[i] * y[i];
      }
    }
  }

  // chi2 of a norm experiment at grid point p = j * nu + u: q - |L_p^-1 b'(p)|^2.
  double norm_point(const Chi2Experiment& E, std::int64_t p, int j, double s2, double q, const double* b0,
                    const double* b1, const double* y, double* bt) const {
    const int kn = E.kn;
    if (E.linear) {
      const double* bj = b1 + static_cast<idx>(j) * kn;
      for (int g = 0; g < kn; ++g) bt[g] = b0[g] - s2 * bj[g];
    } else {
      for (int g = 0; g < kn; ++g) bt[g] = E.prior;
      const double* m = E.mug.data() + static_cast<idx>(p) * E.n;
      for (int i = 0; i < E.n; ++i) bt[E.gid[i]] += m[i] * y[i];
    }
    const double* L = E.Lfac.data() + static_cast<idx>(p) * (static_cast<idx>(kn) * (kn + 1) / 2);
    return q - tri_sq(L, bt, kn);
  }

  struct NormScan {  // per-thread scratch of the scan for the norm experiments
    std::vector<std::vector<double>> y, b0, b1, bt;
    std::vector<double> q;
    explicit NormScan(const Chi2Core& K) {
      for (const auto& e : K.ex_) {
        const int kn = std::max(1, e.kn);
        y.emplace_back(e.norm ? e.n : 1);
        b0.emplace_back(kn);
        b1.emplace_back(e.norm && e.linear ? static_cast<idx>(K.nd_) * kn : 1);
        bt.emplace_back(4 * static_cast<idx>(kn));
      }
      q.assign(K.ex_.size(), 0.0);
    }
  };

  void scan_one(const double* x, double* y, double* r, double* g, double* gsum, NormScan& ns, double* out,
                double& mn, std::int64_t& am) const {
    double R2 = 0.0;
    for (int j = 0; j < nd_; ++j) gsum[j] = 0.0;
    int off = 0;
    for (std::size_t ei = 0; ei < ex_.size(); ++ei) {
      const auto& e = ex_[ei];
      if (e.norm) {
        norm_prepare(e, x + e.offset, ns.y[ei].data(), ns.q[ei], ns.b0[ei].data(), ns.b1[ei].data());
        continue;
      }
      double* re = r + off;
      whiten_one(e, x + e.offset, y, re);
      if (e.linear) {
        double s = 0.0;
        for (int a = 0; a < e.k; ++a) s += re[a] * re[a];
        R2 += s;
        matvec(e.d.data(), re, nd_, e.k, g);
        for (int j = 0; j < nd_; ++j) gsum[j] += g[j];
      }
      off += e.k;
    }
    for (int j = 0; j < nd_; ++j) linear_row(s2_.data(), nu_, R2, gsum[j], nsum_[j], out + static_cast<idx>(j) * nu_);
    if (n_general_ > 0) {
      const std::int64_t np_ = n_points();
      for (std::int64_t p = 0; p < np_; ++p) {
        double v = out[p];
        int o2 = 0;
        for (const auto& e : ex_) {
          if (!e.linear && !e.norm) v += sqdist(r + o2, e.m.data() + static_cast<idx>(p) * e.k, e.k);
          o2 += e.k;
        }
        out[p] = v;
      }
    }
    if (n_norm_ > 0) {
      const int nb = nu_ / 4;
      for (int j = 0; j < nd_; ++j) {
        // blocks of four s2 points: linear norm experiments four lanes at once (norm_points4,
        // bit-identical to norm_point), the others point by point; same order of additions
        for (int b = 0; b < nb; ++b) {
          const std::int64_t p0 = static_cast<std::int64_t>(j) * nu_ + 4 * b;
          double v4[4], val[4];
          for (int q = 0; q < 4; ++q) v4[q] = out[p0 + q];
          for (std::size_t ei = 0; ei < ex_.size(); ++ei) {
            const auto& e = ex_[ei];
            if (!e.norm) continue;
            if (e.linear) {
              const idx kk = static_cast<idx>(e.kn) * (e.kn + 1) / 2;
              norm_points4(e.Lt.data() + (static_cast<idx>(j) * nb + b) * kk * 4, ns.b0[ei].data(),
                           ns.b1[ei].data() + static_cast<idx>(j) * e.kn, s2_.data() + 4 * b, e.kn, ns.q[ei],
                           ns.bt[ei].data(), val);
              for (int q = 0; q < 4; ++q) v4[q] += val[q];
            } else {
              for (int q = 0; q < 4; ++q)
                v4[q] += norm_point(e, p0 + q, j, s2_[4 * b + q], ns.q[ei], ns.b0[ei].data(), ns.b1[ei].data(),
                                    ns.y[ei].data(), ns.bt[ei].data());
            }
          }
          for (int q = 0; q < 4; ++q) out[p0 + q] = v4[q];
        }
        for (int u = 4 * nb; u < nu_; ++u) {
          const std::int64_t p = static_cast<std::int64_t>(j) * nu_ + u;
          double v = out[p];
          for (std::size_t ei = 0; ei < ex_.size(); ++ei) {
            const auto& e = ex_[ei];
            if (e.norm)
              v += norm_point(e, p, j, s2_[u], ns.q[ei], ns.b0[ei].data(), ns.b1[ei].data(), ns.y[ei].data(),
                              ns.bt[ei].data());
          }
          out[p] = v;
        }
      }
    }
    double best = std::numeric_limits<double>::infinity();
    std::int64_t bp = -1;
    const std::int64_t np_ = n_points();
    for (std::int64_t p = 0; p < np_; ++p) take_min(out[p], p, best, bp);
    mn = best;
    am = bp;
  }

  // Per true point: c_e = A_e (mu_e(p) - N0_e) and, for linear gaussian experiments, h_e = d_e c_e.
  void prepare_point(ToyScratch& s, const std::vector<const double*>& mup, long long i) const {
    for (std::size_t e = 0; e < ex_.size(); ++e) {
      const Chi2Experiment& E = ex_[e];
      if (E.gen != Chi2Generator::gaussian || E.norm) continue;
      whiten_one(E, mup[e] + i * E.n, s.y.data(), s.c[e].data());
      if (E.linear) matvec(E.d.data(), s.c[e].data(), nd_, E.k, s.h[e].data());
    }
  }

  // Whitened residual lanes r (k x LANES) of experiment e for LANES realizations.
  void residual_lanes(ToyScratch& s, const Chi2Experiment& E, std::size_t e, const double* mu_p, std::uint64_t point,
                      const std::uint64_t* real, std::uint64_t seed, double* rl) const {
    if (E.gen == Chi2Generator::gaussian) {
      fill_z(s, E, point, real, seed);
      lane_matvec(E.M.data(), s.c[e].data(), s.Z.data(), E.k, E.kg, rl);
    } else {
      for (int l = 0; l < LANES; ++l) {
        pull_realization(mu_p, E.J.data(), E.Lp.data(), E.lo.data(), E.sigma.data(), E.n, E.np, seed, E.stream,
                         point, real[l], s.pull.data(), s.x.data());
        whiten_one(E, s.x.data(), s.y.data(), s.r.data());
        for (int a = 0; a < E.k; ++a) rl[static_cast<idx>(a) * LANES + l] = s.r[a];
      }
    }
  }

  // z ~ N(0, I_kg) of realization real[l]: exactly the normals of gaussian_realization.
  void fill_z(ToyScratch& s, const Chi2Experiment& E, std::uint64_t point, const std::uint64_t* real,
              std::uint64_t seed) const {
    for (int l = 0; l < LANES; ++l) {
      if (l > 0 && real[l] == real[l - 1]) {  // padding lane: same toy again
        for (int g = 0; g < E.kg; ++g) s.Z[static_cast<idx>(g) * LANES + l] = s.Z[static_cast<idx>(g) * LANES + l - 1];
        continue;
      }
      normals(seed, E.stream, real[l], point, PURPOSE_RESIDUAL, s.z.data(), static_cast<std::size_t>(E.kg));
      for (int g = 0; g < E.kg; ++g) s.Z[static_cast<idx>(g) * LANES + l] = s.z[g];
    }
  }

  // A norm experiment's LANES toys x = mu_p (1 + sigma E w) + F z (z: fill_z; w only when
  // sigma > 0, from the PURPOSE_NORM stream as simulate draws it), then what general_lanes needs:
  // y = C^+ x, q = x.y + kn prior, b0' = E^T (N0 * y) + prior, b1(j) = E^T (D_j * y) (linear),
  // each lane with the operations of norm_prepare.
  void norm_toy_lanes(ToyScratch& s, const Chi2Experiment& E, std::size_t e, const double* mu_p, std::uint64_t point,
                      const std::uint64_t* real, std::uint64_t seed) const {
    const int n = E.n, kn = E.kn;
    fill_z(s, E, point, real, seed);
    double* xl = s.nx[e].data();
    double* yl = s.ny[e].data();
    lane_matvec(E.Fm.data(), nullptr, s.Z.data(), n, E.kg, xl);
    if (E.gen_sigma > 0.0) {
      for (int l = 0; l < LANES; ++l) {
        normals(seed, E.stream, real[l], point, PURPOSE_NORM, s.w.data(), static_cast<std::size_t>(kn));
        for (int i = 0; i < n; ++i) {
          double& xv = xl[static_cast<idx>(i) * LANES + l];
          xv = mu_p[i] * (1.0 + E.gen_sigma * s.w[E.gid[i]]) + xv;
        }
      }
    } else {
      for (int i = 0; i < n; ++i)
        for (int l = 0; l < LANES; ++l) xl[static_cast<idx>(i) * LANES + l] = mu_p[i] + xl[static_cast<idx>(i) * LANES + l];
    }
    lane_matvec(E.Ci.data(), nullptr, xl, n, n, yl);
    double* Q = s.nq[e].data();
    double* B0 = s.nb0[e].data();
    double* B1 = s.nb1[e].data();
    for (int l = 0; l < LANES; ++l) {
      double acc = 0.0;
      for (int i = 0; i < n; ++i) acc += xl[static_cast<idx>(i) * LANES + l] * yl[static_cast<idx>(i) * LANES + l];
      Q[l] = acc + kn * E.prior;
      for (int g = 0; g < kn; ++g) B0[static_cast<idx>(g) * LANES + l] = E.prior;
      for (int i = 0; i < n; ++i) B0[static_cast<idx>(E.gid[i]) * LANES + l] += E.N0[i] * yl[static_cast<idx>(i) * LANES + l];
    }
    if (E.linear) {
      group_rows(nd_, n, kn, E.Draw.data(), E.gid.data(), yl, B1);
      if (E.centred && centred_) norm_centred_rows(s, E, e);
    }
  }

  void norm_centred_rows(ToyScratch& s, const Chi2Experiment& E, std::size_t e) const {
    centred_rows(E.kn, nd_, E.G0inv.data(), E.Hrow.data(), E.G11row.data(), s.nq[e].data(), s.nb0[e].data(),
                 s.nb1[e].data(), s.nbeta[e].data(), s.ncn[e].data(), s.nra[e].data(), s.nrb[e].data(),
                 s.nc0[e].data(), s.nc1[e].data());
  }

  // Delta-chi2 = chi2(true point) - min over the grid for LANES toys at one true point.
  void toy_lanes(ToyScratch& s, const std::vector<const double*>& mup, long long i, std::uint64_t point,
                 const std::uint64_t* real, std::uint64_t seed, double* delta, std::int64_t* bestp) const {
    double* gsum = s.gsum.data();
    std::fill(s.gsum.begin(), s.gsum.end(), 0.0);
    for (std::size_t e = 0; e < ex_.size(); ++e) {
      const Chi2Experiment& E = ex_[e];
      if (E.norm) {
        norm_toy_lanes(s, E, e, mup[e] + i * E.n, point, real, seed);
        continue;
      }
      if (E.gen == Chi2Generator::gaussian && E.linear) {
        fill_z(s, E, point, real, seed);
        lane_matvec(E.G.data(), s.h[e].data(), s.Z.data(), nd_, E.kg, s.gl.data());
        for (idx q = 0; q < s.gl.size(); ++q) gsum[q] += s.gl[q];
        continue;
      }
      double* rl = s.rl[e].data();
      residual_lanes(s, E, e, mup[e] + i * E.n, point, real, seed, rl);
      if (E.linear) {
        for (int l = 0; l < LANES; ++l) {
          for (int a = 0; a < E.k; ++a) s.r[a] = rl[static_cast<idx>(a) * LANES + l];
          for (int j = 0; j < nd_; ++j) {
            const double* dj = E.d.data() + static_cast<idx>(j) * E.k;
            double v = 0.0;
            for (int a = 0; a < E.k; ++a) v += dj[a] * s.r[a];
            gsum[static_cast<idx>(j) * LANES + l] += v;
          }
        }
      }
    }
    const std::int64_t pt = static_cast<std::int64_t>(point);
    const int jt = static_cast<int>(pt / nu_), ut = static_cast<int>(pt % nu_);
    double gbest[LANES], gvt[LANES];  // general_lanes' results (when the quadratic shortcut does not apply)
    std::int64_t gbp[LANES];
    const bool quadratic = n_general_ == 0 && n_norm_ == 0 && distinct_;
    if (!quadratic && s.prune) {
      std::int64_t ne = 0;
      general_lanes_pruned(nd_, nu_, s2_.data(), gsum, nsum_.data(), static_cast<int>(s.gk.size()), s.grl.data(),
                           s.gm.data(), s.gk.data(), static_cast<int>(s.nl.size()), s.nl.data(), s.crow.data(), pt,
                           gbest, gbp, gvt, s.pbase.data(), s.plbm.data(), s.prx.data(),
                           s.pord.data(), &ne);
      n_eval_.fetch_add(ne, std::memory_order_relaxed);
      n_scan_.fetch_add(n_points(), std::memory_order_relaxed);
    } else if (!quadratic) {
      general_lanes(nd_, nu_, s2_.data(), gsum, nsum_.data(), static_cast<int>(s.gk.size()), s.grl.data(),
                    s.gm.data(), s.gk.data(), static_cast<int>(s.nl.size()), s.nl.data(), s.crow.data(), pt, gbest,
                    gbp, gvt);
    }
    for (int l = 0; l < LANES; ++l) {
      double best = std::numeric_limits<double>::infinity();
      std::int64_t bp = -1;
      double vt;
      if (quadratic) {
        // Convex quadratic in s2 per dm2 row: the minimum over the sorted s2 grid sits at a
        // grid neighbour of the unconstrained minimiser -G/N.
        for (int j = 0; j < nd_; ++j) {
          const double G = gsum[static_cast<idx>(j) * LANES + l], N = nsum_[j];
          int c0, c1;
          if (N > 0.0) {
            const int q = index_.lower_bound(-G * ninv_[j]);
            c0 = q - 1;
            c1 = q < nu_ ? q : -1;
          } else {  // flat row or linear in s2: an end of the range
            c0 = 0;
            c1 = nu_ - 1;
          }
          if (c0 >= 0) {
            const int u = order_[c0];
            take_min(lin_value(s2_[u], G, N), static_cast<std::int64_t>(j) * nu_ + u, best, bp);
          }
          if (c1 >= 0) {
            const int u = order_[c1];
            take_min(lin_value(s2_[u], G, N), static_cast<std::int64_t>(j) * nu_ + u, best, bp);
          }
        }
        vt = lin_value(s2_[ut], gsum[static_cast<idx>(jt) * LANES + l], nsum_[jt]);
        take_min(vt, pt, best, bp);
      } else {
        vt = gvt[l];
        best = gbest[l];
        bp = gbp[l];
      }
      delta[l] = vt - best;
      bestp[l] = bp;
    }
  }
};

}  // namespace

// ---- Chi2Kernel: the public C++ API (chi2.hpp) over Chi2Core ----------------------------

struct Chi2Kernel::Impl : Chi2Core {
  using Chi2Core::Chi2Core;
};

Chi2Kernel::Chi2Kernel(const double* s2, int n_ue4, int n_dm2) : impl_(std::make_unique<Impl>(s2, n_ue4, n_dm2)) {}
Chi2Kernel::~Chi2Kernel() = default;

int Chi2Kernel::add_linear(const std::string& name, const double* A, int k, const double* N0, int n_bins,
                           const double* D) {
  return impl_->add_linear(name, A, k, N0, n_bins, D);
}
int Chi2Kernel::add_general(const std::string& name, const double* A, int k, const double* N0, int n_bins,
                            const double* mu_grid) {
  return impl_->add_general(name, A, k, N0, n_bins, mu_grid);
}
int Chi2Kernel::add_norm(const std::string& name, const double* Aw, int kw, const double* N0, int n_bins,
                         const double* Ci, const std::int64_t* groups, double prior, const double* factors, bool linear,
                         const double* table) {
  return impl_->add_norm(name, Aw, kw, N0, n_bins, Ci, groups, prior, factors, linear, table);
}
void Chi2Kernel::set_gaussian_generator(int index, std::uint64_t stream, const double* factor_t, int kg,
                                        double norm_sigma) {
  impl_->set_gaussian_generator(index, stream, factor_t, kg, norm_sigma);
}
void Chi2Kernel::set_pull_generator(int index, std::uint64_t stream, const double* J, int n_pulls, const double* Lp,
                                    const double* lo, const double* sigma) {
  impl_->set_pull_generator(index, stream, J, n_pulls, Lp, lo, sigma);
}
void Chi2Kernel::set_prune_factors(int index, const double* K, const std::int64_t* ref, const double* A,
                                   const double* B) {
  impl_->set_prune_factors(index, K, ref, A, B);
}

bool Chi2Kernel::centred() const { return impl_->centred(); }
void Chi2Kernel::set_centred(bool on) { impl_->set_centred(on); }
bool Chi2Kernel::prune() const { return impl_->prune(); }
void Chi2Kernel::set_prune(bool on) { impl_->set_prune(on); }
std::pair<std::int64_t, std::int64_t> Chi2Kernel::prune_stats() const { return impl_->prune_stats(); }
void Chi2Kernel::reset_prune_stats() { impl_->reset_prune_stats(); }

int Chi2Kernel::n_ue4() const { return impl_->n_ue4(); }
int Chi2Kernel::n_dm2() const { return impl_->n_dm2(); }
std::int64_t Chi2Kernel::n_points() const { return impl_->n_points(); }
int Chi2Kernel::n_bins() const { return impl_->n_bins(); }
int Chi2Kernel::n_experiments() const { return impl_->n_experiments(); }
bool Chi2Kernel::linear_only() const { return impl_->linear_only(); }
std::vector<int> Chi2Kernel::dims() const { return impl_->dims(); }
std::vector<bool> Chi2Kernel::linear() const { return impl_->linear(); }
std::vector<std::string> Chi2Kernel::generators() const { return impl_->generators(); }
std::vector<int> Chi2Kernel::norm_groups_count() const { return impl_->norm_groups_count(); }
int Chi2Kernel::whiten_width() const { return impl_->whiten_width(); }
int Chi2Kernel::toy_width() const { return impl_->toy_width(); }
const Chi2Experiment& Chi2Kernel::experiment(int index) const { return impl_->experiment(index); }

void Chi2Kernel::whiten(const double* x, std::ptrdiff_t n_data, double* out) const { impl_->whiten(x, n_data, out); }
void Chi2Kernel::scan(const double* x, std::ptrdiff_t n_data, int nt, double* chi2, double* min,
                      std::int64_t* argmin) const {
  impl_->scan(x, n_data, nt, chi2, min, argmin);
}
void Chi2Kernel::fc_toys(const std::int64_t* point_ids, std::ptrdiff_t n, const double* const* mu,
                         std::ptrdiff_t n_toys, std::uint64_t seed, std::int64_t toy_offset, int nt, double* delta,
                         std::int64_t* best) const {
  impl_->fc_toys(point_ids, n, mu, n_toys, seed, toy_offset, nt, delta, best);
}
void Chi2Kernel::whitened_toys(const std::int64_t* point_ids, std::ptrdiff_t n, const double* const* mu,
                               std::ptrdiff_t n_toys, std::uint64_t seed, std::int64_t toy_offset, int nt,
                               double* out) const {
  impl_->whitened_toys(point_ids, n, mu, n_toys, seed, toy_offset, nt, out);
}

// ---- Python binding: argument checks (ValueError naming the argument), conversions, GIL ----

namespace {

// A (k, n_bins) and N0 (n_bins) of a new experiment.
void check_experiment(const std::string& name, const carray<double>& A, const carray<double>& N0) {
  require_ndim(A, 2, (name + " whitening-projection A").c_str());
  require_ndim(N0, 1, (name + " null expectation").c_str());
  require(N0.shape(0) >= 1, name + ": null expectation must not be empty");
  require(A.shape(1) == N0.shape(0), name + ": whitening-projection A must have shape (k, n_bins) with n_bins = " +
                                         std::to_string(N0.shape(0)) + ", got " + shape_str(A.shape(0), A.shape(1)));
  require_finite(A, (name + " whitening-projection A").c_str());
  require_finite(N0, (name + " null expectation").c_str());
}

std::unique_ptr<Chi2Kernel> make_kernel(const carray<double>& s2, int n_dm2) {
  require_ndim(s2, 1, "s2 (sin^2(2 theta) grid)");
  require(s2.shape(0) >= 1, "s2 (sin^2(2 theta) grid) must not be empty");
  require(n_dm2 >= 1, "n_dm2 must be >= 1, got " + std::to_string(n_dm2));
  require_finite(s2, "s2 (sin^2(2 theta) grid)");
  for (py::ssize_t i = 0; i < s2.shape(0); ++i) require(s2.data()[i] >= 0.0, "s2 (sin^2(2 theta) grid) must be >= 0");
  return std::make_unique<Chi2Kernel>(s2.data(), static_cast<int>(s2.shape(0)), n_dm2);
}

int add_linear(Chi2Kernel& k, const std::string& name, const carray<double>& A, const carray<double>& N0,
               const carray<double>& D) {
  check_experiment(name, A, N0);
  const py::ssize_t n = N0.shape(0);
  require_ndim(D, 2, (name + " deficit D(dm2)").c_str());
  require(D.shape(0) == k.n_dm2() && D.shape(1) == n, name + ": deficit D(dm2) must have shape (n_dm2, n_bins) = " +
                                                            shape_str(k.n_dm2(), n) + ", got " +
                                                            shape_str(D.shape(0), D.shape(1)));
  require_finite(D, (name + " deficit D(dm2)").c_str());
  return k.add_linear(name, A.data(), static_cast<int>(A.shape(0)), N0.data(), static_cast<int>(n), D.data());
}

int add_general(Chi2Kernel& k, const std::string& name, const carray<double>& A, const carray<double>& N0,
                const carray<double>& mu_grid) {
  check_experiment(name, A, N0);
  const py::ssize_t n = N0.shape(0);
  require_ndim(mu_grid, 2, (name + " expectation grid").c_str());
  require(mu_grid.shape(0) == k.n_points() && mu_grid.shape(1) == n,
          name + ": expectation grid must have shape (n_points, n_bins) = " + shape_str(k.n_points(), n) + ", got " +
              shape_str(mu_grid.shape(0), mu_grid.shape(1)));
  require_finite(mu_grid, (name + " expectation grid").c_str());
  return k.add_general(name, A.data(), static_cast<int>(A.shape(0)), N0.data(), static_cast<int>(n), mu_grid.data());
}

int add_norm(Chi2Kernel& k, const std::string& name, const carray<double>& Aw, const carray<double>& N0,
             const carray<double>& Ci, const carray<std::int64_t>& groups, double prior, const carray<double>& Lfac,
             bool linear, const carray<double>& table) {
  check_experiment(name, Aw, N0);
  const py::ssize_t n = N0.shape(0);
  require_ndim(Ci, 2, (name + " C^+").c_str());
  require(Ci.shape(0) == n && Ci.shape(1) == n, name + ": C^+ must be n_bins x n_bins");
  require_finite(Ci, (name + " C^+").c_str());
  require_ndim(groups, 1, (name + " norm_groups").c_str());
  require(groups.shape(0) == n, name + ": norm_groups must have n_bins entries");
  require(std::isfinite(prior) && prior >= 0.0, name + ": prior (1/sigma^2) must be finite and >= 0");
  int kn = 0;
  for (py::ssize_t i = 0; i < n; ++i) {
    const std::int64_t g = groups.data()[i];
    require(g >= 0, name + ": every bin must belong to a normalisation group");
    kn = std::max(kn, static_cast<int>(g) + 1);
  }
  const py::ssize_t kk = static_cast<py::ssize_t>(kn) * (kn + 1) / 2;
  require_ndim(Lfac, 2, (name + " normalisation factors").c_str());
  require(Lfac.shape(0) == k.n_points() && Lfac.shape(1) == kk,
          name + ": normalisation factors must have shape (n_points, kn(kn+1)/2) = " + shape_str(k.n_points(), kk));
  require_finite(Lfac, (name + " normalisation factors").c_str());
  require_ndim(table, 2, (name + (linear ? " deficit D(dm2)" : " expectation grid")).c_str());
  if (linear) {
    require(table.shape(0) == k.n_dm2() && table.shape(1) == n,
            name + ": deficit D(dm2) must have shape (n_dm2, n_bins)");
    require_finite(table, (name + " deficit D(dm2)").c_str());
  } else {
    require(table.shape(0) == k.n_points() && table.shape(1) == n,
            name + ": expectation grid must have shape (n_points, n_bins)");
    require_finite(table, (name + " expectation grid").c_str());
  }
  return k.add_norm(name, Aw.data(), static_cast<int>(Aw.shape(0)), N0.data(), static_cast<int>(n), Ci.data(),
                    groups.data(), prior, Lfac.data(), linear, table.data());
}

void set_gaussian_generator(Chi2Kernel& k, int i, std::uint64_t stream, const carray<double>& Ft,
                            double norm_sigma) {
  const Chi2Experiment& e = k.experiment(i);
  require(std::isfinite(norm_sigma) && norm_sigma >= 0.0, e.name + ": norm_sigma must be finite and >= 0");
  require(norm_sigma == 0.0 || e.norm, e.name + ": norm_sigma > 0 needs normalisation groups");
  require_ndim(Ft, 2, (e.name + " generation factor_t").c_str());
  require(Ft.shape(1) == e.n && Ft.shape(0) >= 1,
          e.name + ": generation factor_t must have shape (k, n_bins) with n_bins = " + std::to_string(e.n) +
              ", got " + shape_str(Ft.shape(0), Ft.shape(1)));
  require_finite(Ft, (e.name + " generation factor_t").c_str());
  k.set_gaussian_generator(i, stream, Ft.data(), static_cast<int>(Ft.shape(0)), norm_sigma);
}

void set_pull_generator(Chi2Kernel& k, int i, std::uint64_t stream, const carray<double>& J,
                        const carray<double>& Lp, const carray<double>& lo, const carray<double>& sigma) {
  const Chi2Experiment& e = k.experiment(i);
  require_ndim(J, 2, (e.name + " pull_jacobian").c_str());
  require_ndim(Lp, 2, (e.name + " pull_factor").c_str());
  require_ndim(lo, 1, (e.name + " pull_lower").c_str());
  require_ndim(sigma, 1, (e.name + " stat_sigma").c_str());
  const py::ssize_t p = J.shape(1);
  require(J.shape(0) == e.n,
          e.name + ": pull_jacobian must have shape (n_bins, n_pulls) with n_bins = " + std::to_string(e.n));
  require(Lp.shape(0) == p && Lp.shape(1) == p,
          e.name + ": pull_factor must have shape (n_pulls, n_pulls) = " + shape_str(p, p));
  require(lo.shape(0) == p, e.name + ": pull_lower must have n_pulls = " + std::to_string(p) + " entries");
  require(sigma.shape(0) == e.n, e.name + ": stat_sigma must have n_bins = " + std::to_string(e.n) + " entries");
  require_finite(J, (e.name + " pull_jacobian").c_str());
  require_finite(Lp, (e.name + " pull_factor").c_str());
  require_finite(sigma, (e.name + " stat_sigma").c_str());
  for (py::ssize_t q = 0; q < p; ++q)
    require(!std::isnan(lo.data()[q]), e.name + ": pull_lower must not be NaN (use -inf for no bound)");
  for (py::ssize_t b = 0; b < e.n; ++b) require(sigma.data()[b] >= 0, e.name + ": stat_sigma must be >= 0");
  require(!e.norm, e.name + ": a pull generator cannot serve an experiment with normalisation groups");
  k.set_pull_generator(i, stream, J.data(), static_cast<int>(p), Lp.data(), lo.data(), sigma.data());
}

void check_prune_array(const Chi2Kernel& k, const Chi2Experiment& e, const carray<double>& K, const char* what) {
  require_ndim(K, 1, (e.name + " " + what).c_str());
  require(K.shape(0) == k.n_points(), e.name + ": " + what + " must have n_points entries");
  for (py::ssize_t p = 0; p < K.shape(0); ++p)
    require(std::isfinite(K.data()[p]) && K.data()[p] >= 0.0, e.name + ": " + what + " must be finite and >= 0");
}

void set_prune_factors(Chi2Kernel& k, int i, const carray<double>& K, std::optional<carray<std::int64_t>> ref,
                       std::optional<carray<double>> A, std::optional<carray<double>> B) {
  const Chi2Experiment& e = k.experiment(i);
  require(e.norm && e.linear, e.name + ": prune factors need a linear experiment with normalisation groups");
  check_prune_array(k, e, K, "prune factors");
  require(ref.has_value() == A.has_value() && ref.has_value() == B.has_value(),
          e.name + ": the reference bound needs ref, A and B together");
  if (!ref) {
    k.set_prune_factors(i, K.data());
    return;
  }
  require(e.centred, e.name + ": the reference bound needs the centred form");
  require_ndim(*ref, 1, (e.name + " prune reference").c_str());
  require(ref->shape(0) == k.n_dm2(), e.name + ": the prune reference must have n_dm2 entries");
  for (py::ssize_t j = 0; j < ref->shape(0); ++j)
    require(ref->data()[j] >= -1 && ref->data()[j] < k.n_ue4(),
            e.name + ": prune reference points must be -1 or in [0, n_ue4)");
  check_prune_array(k, e, *A, "prune factors A");
  check_prune_array(k, e, *B, "prune factors B");
  k.set_prune_factors(i, K.data(), ref->data(), A->data(), B->data());
}

// x (n_data, n_bins): the number of data vectors.
py::ssize_t check_data(const Chi2Kernel& k, const carray<double>& x) {
  require_ndim(x, 2, "x (data vectors)");
  require(x.shape(1) == k.n_bins(), "x (data vectors) must have " + std::to_string(k.n_bins()) +
                                        " bins per row (all experiments concatenated), got " +
                                        std::to_string(x.shape(1)));
  require_finite(x, "x (data vectors)");
  return x.shape(0);
}

py::array_t<double> whiten(const Chi2Kernel& k, const carray<double>& x) {
  const py::ssize_t nx = check_data(k, x);
  py::array_t<double> out({nx, static_cast<py::ssize_t>(k.whiten_width())});
  k.whiten(x.data(), nx, out.mutable_data());
  return out;
}

py::tuple chi2_scan(const Chi2Kernel& k, const carray<double>& x, std::optional<int> threads) {
  require(k.n_experiments() > 0, "the chi2 kernel has no experiments");
  const py::ssize_t nx = check_data(k, x);
  const int nt = resolve_threads(threads);
  py::array_t<double> chi2({nx, static_cast<py::ssize_t>(k.n_points())});
  py::array_t<double> mins(nx);
  py::array_t<std::int64_t> argmin(nx);
  double* c = chi2.mutable_data();
  double* mn = mins.mutable_data();
  std::int64_t* am = argmin.mutable_data();
  {
    py::gil_scoped_release nogil;
    k.scan(x.data(), nx, nt, c, mn, am);
  }
  return py::make_tuple(chi2, mins, argmin);
}

// The arguments of the FC toys: returns the expectations mu[e] (n, n_bins_e) as C arrays.
std::vector<carray<double>> check_toy_args(const Chi2Kernel& k, const carray<std::int64_t>& point_ids,
                                           const py::list& mu, py::ssize_t n_toys, std::int64_t toy_offset) {
  require(k.n_experiments() > 0, "the chi2 kernel has no experiments");
  require_ndim(point_ids, 1, "point_ids");
  require(n_toys >= 1, "n_toys must be >= 1, got " + std::to_string(n_toys));
  require(toy_offset >= 0, "toy_offset must be >= 0");
  const py::ssize_t npt = point_ids.shape(0);
  for (py::ssize_t i = 0; i < npt; ++i)
    require(point_ids.data()[i] >= 0 && point_ids.data()[i] < k.n_points(),
            "point_ids must lie in [0, n_points = " + std::to_string(k.n_points()) + "), got " +
                std::to_string(point_ids.data()[i]));
  require(static_cast<py::ssize_t>(mu.size()) == static_cast<py::ssize_t>(k.n_experiments()),
          "mu must be a list with one (n_points, n_bins) array per experiment (" + std::to_string(k.n_experiments()) +
              "), got " + std::to_string(mu.size()));
  std::vector<carray<double>> out;
  for (int e = 0; e < k.n_experiments(); ++e) {
    const Chi2Experiment& E = k.experiment(e);
    require(E.gen != Chi2Generator::none, E.name + ": no toy generator set");
    auto a = mu[e].cast<carray<double>>();
    const std::string nm = E.name + " expectation at the true points";
    require_ndim(a, 2, nm.c_str());
    require(a.shape(0) == npt && a.shape(1) == E.n, nm + " must have shape " + shape_str(npt, E.n) + ", got " +
                                                        shape_str(a.shape(0), a.shape(1)));
    require_finite(a, nm.c_str());
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<const double*> data_pointers(const std::vector<carray<double>>& arrays) {
  std::vector<const double*> p;
  for (const auto& a : arrays) p.push_back(a.data());
  return p;
}

py::object fc_toys(const Chi2Kernel& k, const carray<std::int64_t>& point_ids, const py::list& mu,
                   py::ssize_t n_toys, std::uint64_t seed, std::int64_t toy_offset, bool return_best,
                   std::optional<int> threads) {
  const auto mus = check_toy_args(k, point_ids, mu, n_toys, toy_offset);
  const int nt = resolve_threads(threads);
  const py::ssize_t npt = point_ids.shape(0);
  py::array_t<double> delta({npt, n_toys});
  py::array_t<std::int64_t> best;
  if (return_best) best = py::array_t<std::int64_t>({npt, n_toys});
  double* dp = delta.mutable_data();
  std::int64_t* bp = return_best ? best.mutable_data() : nullptr;
  const std::vector<const double*> mup = data_pointers(mus);
  {
    py::gil_scoped_release nogil;
    k.fc_toys(point_ids.data(), npt, mup.data(), n_toys, seed, toy_offset, nt, dp, bp);
  }
  if (return_best) return py::make_tuple(delta, best);
  return delta;
}

py::array_t<double> whitened_toys(const Chi2Kernel& k, const carray<std::int64_t>& point_ids, const py::list& mu,
                                  py::ssize_t n_toys, std::uint64_t seed, std::int64_t toy_offset,
                                  std::optional<int> threads) {
  const auto mus = check_toy_args(k, point_ids, mu, n_toys, toy_offset);
  const int nt = resolve_threads(threads);
  const py::ssize_t npt = point_ids.shape(0);
  py::array_t<double> out({npt, n_toys, static_cast<py::ssize_t>(k.toy_width())});
  double* o = out.mutable_data();
  const std::vector<const double*> mup = data_pointers(mus);
  {
    py::gil_scoped_release nogil;
    k.whitened_toys(point_ids.data(), npt, mup.data(), n_toys, seed, toy_offset, nt, o);
  }
  return out;
}

}  // namespace

void register_chi2(py::module_& m) {
  py::class_<Chi2Kernel>(m, "Chi2Kernel",
                         "Precomputed chi2 structure of a set of experiments on a (sin^2 2theta, dm2) grid: the "
                         "whitening-projections A_e, null expectations, linear deficits d_e(dm2) or general offsets, "
                         "and the toy generators. Built by fcmlc.frequentist.Chi2Model.")
      .def(py::init(&make_kernel), py::arg("s2"), py::arg("n_dm2"))
      .def("add_linear", &add_linear, py::arg("name"), py::arg("A"), py::arg("N0"), py::arg("D"),
           "Linear experiment: expectation N0 - s2 D(dm2_j); A (k, n_bins), D (n_dm2, n_bins). Returns its index.")
      .def("add_general", &add_general, py::arg("name"), py::arg("A"), py::arg("N0"), py::arg("mu_grid"),
           "General experiment: expectation mu_grid (n_points, n_bins) at every grid point. Returns its index.")
      .def("add_norm", &add_norm, py::arg("name"), py::arg("Aw"), py::arg("N0"), py::arg("Ci"),
           py::arg("norm_groups"), py::arg("prior"), py::arg("factors"), py::arg("linear"), py::arg("table"),
           "Experiment with multiplicative normalisation groups, profiled exactly: chi2 = q - |L_p^-1 b'(p)|^2 "
           "(see fcmlc.frequentist). Aw (kw, n_bins): projection at the null expectation (whiten only); Ci = C^+; "
           "prior = 1/sigma^2 (0: free); factors (n_points, kn(kn+1)/2): packed inverse Cholesky factors of G'(p); "
           "table: D (n_dm2, n_bins) when linear, else mu_grid (n_points, n_bins). Returns its index.")
      .def("set_gaussian_generator", &set_gaussian_generator, py::arg("index"), py::arg("stream"),
           py::arg("factor_t"), py::arg("norm_sigma") = 0.0,
           "Toys x = mu (1 + norm_sigma E w) + F z as simulate_gaussian (factor_t = F^T, shape (k, n_bins)).")
      .def("set_pull_generator", &set_pull_generator, py::arg("index"), py::arg("stream"),
           py::arg("pull_jacobian"), py::arg("pull_factor"), py::arg("pull_lower"), py::arg("stat_sigma"),
           "Toys as simulate_pulls.")
      .def("whiten", &whiten, py::arg("x"),
           "r = A_e (x_e - N0_e) of each experiment, concatenated: (n_data, sum k_e).")
      .def_property("centred", &Chi2Kernel::centred, &Chi2Kernel::set_centred,
                    "Use the centred float32 form of linear experiments with normalisation groups in the FC toys "
                    "and scans (default True; False: the float64 profile q - |L_p^-1 b'(p)|^2 everywhere).")
      .def_property("prune", &Chi2Kernel::prune, &Chi2Kernel::set_prune,
                    "FC toys: skip grid points whose lower bound exceeds the running minimum (default True; "
                    "results bit-identical to False). Needs set_prune_factors for every centred experiment.")
      .def("set_prune_factors", &set_prune_factors, py::arg("index"), py::arg("K"), py::arg("ref") = py::none(),
           py::arg("A") = py::none(), py::arg("B") = py::none(),
           "K_p (n_points): the computed float32 |L_p^-1 c|^2 <= K_p |c|^2 for every p (rounding included). "
           "Optionally a tighter bound from a reference point per dm2 row: ref (n_dm2, index into the row or "
           "-1), A_p, B_p (n_points) with |L_p^-1 c|^2 <= A_p |R_j c|^2 + B_p |c|^2 + K_p (rounding of c), "
           "R_j the float32 factor at the reference (fcmlc.frequentist.linalg.prune_reference).")
      .def_property_readonly("prune_stats", &Chi2Kernel::prune_stats,
                             "(grid points computed, grid points scanned) of the pruned FC toys since the last reset.")
      .def("reset_prune_stats", &Chi2Kernel::reset_prune_stats)
      .def_property_readonly("n_ue4", &Chi2Kernel::n_ue4)
      .def_property_readonly("n_dm2", &Chi2Kernel::n_dm2)
      .def_property_readonly("n_points", &Chi2Kernel::n_points)
      .def_property_readonly("n_bins", &Chi2Kernel::n_bins)
      .def_property_readonly("n_experiments", &Chi2Kernel::n_experiments)
      .def_property_readonly("dims", &Chi2Kernel::dims)
      .def_property_readonly("linear", &Chi2Kernel::linear)
      .def_property_readonly("linear_only", &Chi2Kernel::linear_only)
      .def_property_readonly("generators", &Chi2Kernel::generators)
      .def_property_readonly("n_norm_groups", &Chi2Kernel::norm_groups_count);

  m.def("chi2_scan", &chi2_scan, py::arg("kernel"), py::arg("x"), py::arg("threads") = py::none(),
        "chi2 of each data vector (rows of x, experiments concatenated) at every grid point. Returns "
        "(chi2 (n_data, n_points), min (n_data,), argmin (n_data,)); ties go to the smaller point index.");
  m.def("fc_toys", &fc_toys, py::arg("kernel"), py::arg("point_ids"), py::arg("mu"), py::arg("n_toys"),
        py::arg("seed"), py::arg("toy_offset") = 0, py::arg("return_best") = false, py::arg("threads") = py::none(),
        "Feldman-Cousins toys: for each true grid point p (point_ids, with expectations mu[e] (n, n_bins_e) per "
        "experiment) and toys t = toy_offset .. toy_offset + n_toys - 1 (realization t of point p, as in simulate), "
        "Delta-chi2 = chi2(p) - min over the grid. Returns delta (n, n_toys) [, best point index (n, n_toys)].");
  m.def("fc_whitened_toys", &whitened_toys, py::arg("kernel"), py::arg("point_ids"), py::arg("mu"),
        py::arg("n_toys"), py::arg("seed"), py::arg("toy_offset") = 0, py::arg("threads") = py::none(),
        "The whitened toys r (n, n_toys, sum k_e) that fc_toys scans (for tests).");
}

}  // namespace fcmlc

// Kernel: batched 2-D Gaussian product-kernel density estimates on a grid
// (p(y_hat | x) of the FCMLC paper, Sec. II B). See fcmlc/kde.hpp.
#include "fcmlc/kde.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "fcmlc/common.hpp"
#include "fcmlc/integrate.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FCMLC_X86 1
#else
#define FCMLC_X86 0
#endif

namespace fcmlc {

namespace {

using idx = std::ptrdiff_t;

constexpr double TWO_PI = 6.283185307179586476925286766559;

// The exponentials follow the arithmetic path of the matrix product: AVX2+FMA
// when the product uses it, glibc exp otherwise (see integrate.hpp).
bool simd_exp_enabled() {
  static const bool v = std::string(gemm_isa()) == "avx2-fma";
  return v;
}

// Portable: out[i] = exp(-(v - c[i])^2 / s2), the same expression, operation for
// operation, as statsmodels' Gaussian kernel (glibc exp, < 1 ulp).
void gauss_row_portable(double v, const double* c, idx n, double s2, double* out) {
  for (idx i = 0; i < n; ++i) {
    const double d = v - c[i];
    out[i] = std::exp(-(d * d) / s2);
  }
}

#if FCMLC_X86 && defined(__GNUC__)
// exp(x) for x <= 0 (including -inf), 4 lanes: x = n ln2 + r with |r| <= ln2/2
// (two-part Cody-Waite reduction with FMA), degree-13 Taylor polynomial for exp(r)
// (truncation < 5e-18), and the 2^n scaling in two exact halves so that results
// down into the subnormal range are right. Error about 1 ulp; the same result in
// every lane position.
__attribute__((target("avx2,fma"))) inline __m256d exp_nonpos_avx2(__m256d x) {
  const __m256d ln2_hi = _mm256_set1_pd(0x1.62e42fefa39efp-1);
  const __m256d ln2_lo = _mm256_set1_pd(0x1.abc9e3b39803fp-56);
  x = _mm256_max_pd(x, _mm256_set1_pd(-746.0));  // exp(-746) rounds to 0; also maps -inf
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(0x1.71547652b82fep0)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(n, ln2_hi, x);
  r = _mm256_fnmadd_pd(n, ln2_lo, r);
  __m256d p = _mm256_set1_pd(1.0 / 6227020800.0);  // 1/13!
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 479001600.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 39916800.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3628800.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362880.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40320.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5040.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  const __m128i ni = _mm256_cvtpd_epi32(n);  // n in [-1076, 0]
  const __m128i n1 = _mm_srai_epi32(ni, 1);
  const __m128i n2 = _mm_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi64x(1023);
  const __m256d s1 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(n1), bias), 52));
  const __m256d s2 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(n2), bias), 52));
  return _mm256_mul_pd(_mm256_mul_pd(p, s1), s2);
}

__attribute__((target("avx2,fma"))) void gauss_row_avx2(double v, const double* c, idx n, double s2, double* out) {
  const __m256d vv = _mm256_set1_pd(v), ss = _mm256_set1_pd(s2);
  const __m256d sign = _mm256_set1_pd(-0.0);
  idx i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d d = _mm256_sub_pd(vv, _mm256_loadu_pd(c + i));
    const __m256d arg = _mm256_div_pd(_mm256_xor_pd(_mm256_mul_pd(d, d), sign), ss);
    _mm256_storeu_pd(out + i, exp_nonpos_avx2(arg));
  }
  if (i < n) {
    // Remainder through the same vector code (identical arithmetic in every position).
    alignas(32) double cb[4] = {v, v, v, v};
    alignas(32) double ob[4];
    for (idx q = i; q < n; ++q) cb[q - i] = c[q];
    const __m256d d = _mm256_sub_pd(vv, _mm256_load_pd(cb));
    const __m256d arg = _mm256_div_pd(_mm256_xor_pd(_mm256_mul_pd(d, d), sign), ss);
    _mm256_store_pd(ob, exp_nonpos_avx2(arg));
    for (idx q = i; q < n; ++q) out[q] = ob[q - i];
  }
}
#endif

inline void gauss_row(bool simd, double v, const double* c, idx n, double s2, double* out) {
#if FCMLC_X86 && defined(__GNUC__)
  if (simd) return gauss_row_avx2(v, c, n, s2, out);
#endif
  (void)simd;
  gauss_row_portable(v, c, n, s2, out);
}

}  // namespace

std::size_t kde2d_work_doubles(idx m, idx n_a, idx n_b, int nt) {
  return static_cast<std::size_t>(m) * (n_a + n_b + 1) + gemm_scratch_doubles(nt);
}

void kde2d_grid(const double* samples, idx m, const double* a, idx n_a, const double* b, idx n_b, double h_a,
                double h_b, double* out, double* work, int nt) {
  double* KaT = work;                    // m x n_a
  double* Kb = work + m * n_a;           // n_b x m
  double* ycol = Kb + n_b * m;           // m: the axis-b column of the samples
  double* scratch = ycol + m;            // product scratch
  const double sa = h_a * h_a * 2.0, sb = h_b * h_b * 2.0;
  const bool simd = simd_exp_enabled();
  for (idx j = 0; j < m; ++j) ycol[j] = samples[2 * j + 1];
  // KaT[j, :] = exp(-(x_j - a)^2 / sa), Kb[l, :] = exp(-(y - b_l)^2 / sb)
  if (nt <= 1) {
    for (idx j = 0; j < m; ++j) gauss_row(simd, samples[2 * j], a, n_a, sa, KaT + j * n_a);
    for (idx l = 0; l < n_b; ++l) gauss_row(simd, b[l], ycol, m, sb, Kb + l * m);
  } else {
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static) nowait
      for (idx j = 0; j < m; ++j) gauss_row(simd, samples[2 * j], a, n_a, sa, KaT + j * n_a);
#pragma omp for schedule(static)
      for (idx l = 0; l < n_b; ++l) gauss_row(simd, b[l], ycol, m, sb, Kb + l * m);
    }
  }
  gemm_deterministic(Kb, m, KaT, n_a, out, n_a, n_b, n_a, m, nt, scratch);
  const double scale = 1.0 / (TWO_PI * h_a * h_b * static_cast<double>(m));
  for (idx i = 0; i < n_a * n_b; ++i) out[i] *= scale;
}

namespace {

const char* column_name(idx c) { return c == 0 ? "axis-a (log10|Ue4|)" : "axis-b (log10 dm2)"; }

void validate_centres(const carray<double>& c, const char* name) {
  require_ndim(c, 1, name);
  require(c.shape(0) >= 1, std::string(name) + " must hold at least one grid centre");
  const double* p = c.data();
  for (idx i = 0; i < c.shape(0); ++i)
    if (!std::isfinite(p[i])) {
      std::ostringstream s;
      s << name << " contains a non-finite value (" << p[i] << ") at index " << i;
      throw py::value_error(s.str());
    }
}

// samples (batch, m, 2) in the working variables; bandwidth (batch, 2).
py::array_t<double> kde_grid_2d(const carray<double>& samples, const carray<double>& a_centres,
                                const carray<double>& b_centres, const carray<double>& bandwidth,
                                std::optional<int> threads) {
  if (samples.ndim() != 3 || samples.shape(2) != 2) {
    std::ostringstream s;
    s << "samples must have shape (batch, m, 2) with columns (log10|Ue4|, log10 dm2); got shape (";
    for (idx i = 0; i < samples.ndim(); ++i) s << (i ? ", " : "") << samples.shape(i);
    s << ")";
    throw py::value_error(s.str());
  }
  const idx B = samples.shape(0), m = samples.shape(1);
  require(m >= 1, "samples must contain at least one sample per set, got m = 0");
  validate_centres(a_centres, "a_centres");
  validate_centres(b_centres, "b_centres");
  require_ndim(bandwidth, 2, "bandwidth");
  require(bandwidth.shape(0) == B && bandwidth.shape(1) == 2,
          "bandwidth must have shape (batch, 2) = " + shape_str(B, 2) + ", got " +
              shape_str(bandwidth.shape(0), bandwidth.shape(1)));
  {
    const double* x = samples.data();
    for (idx i = 0; i < B * m * 2; ++i)
      if (!std::isfinite(x[i])) {
        const idx bi = i / (2 * m), j = (i / 2) % m, c = i % 2;
        std::ostringstream s;
        s << "samples contains a non-finite value (" << x[i] << ") at [" << bi << ", " << j << ", " << c
          << "] (set " << bi << ", sample " << j << ", " << column_name(c) << ")";
        throw py::value_error(s.str());
      }
    const double* h = bandwidth.data();
    for (idx i = 0; i < B * 2; ++i)
      if (!(h[i] > 0.0 && std::isfinite(h[i]))) {
        std::ostringstream s;
        s << "bandwidth must be finite and > 0; bandwidth[" << i / 2 << ", " << i % 2 << "] (" << column_name(i % 2)
          << ") = " << h[i];
        if (h[i] == 0.0) s << " (all samples of set " << i / 2 << " share one value on this axis?)";
        throw py::value_error(s.str());
      }
  }
  const int nt = resolve_threads(threads);
  const idx na = a_centres.shape(0), nb = b_centres.shape(0);
  py::array_t<double> out({B, nb, na});
  const double* x = samples.data();
  const double* ac = a_centres.data();
  const double* bc = b_centres.data();
  const double* h = bandwidth.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    if (B >= nt || nt == 1) {
      // One set per thread at a time.
      const int nthr = static_cast<int>(std::min<idx>(nt, B));
      const std::size_t wsize = kde2d_work_doubles(m, na, nb, 1);
      std::vector<double> work(static_cast<std::size_t>(std::max(nthr, 1)) * wsize);
#pragma omp parallel num_threads(std::max(nthr, 1))
      {
#if FCMLC_HAVE_OPENMP
        double* w = work.data() + static_cast<std::size_t>(omp_get_thread_num()) * wsize;
#else
        double* w = work.data();
#endif
#pragma omp for schedule(static)
        for (idx bi = 0; bi < B; ++bi)
          kde2d_grid(x + bi * m * 2, m, ac, na, bc, nb, h[2 * bi], h[2 * bi + 1], o + bi * nb * na, w, 1);
      }
    } else {
      // Fewer sets than threads: parallelise inside each set.
      std::vector<double> work(kde2d_work_doubles(m, na, nb, nt));
      for (idx bi = 0; bi < B; ++bi)
        kde2d_grid(x + bi * m * 2, m, ac, na, bc, nb, h[2 * bi], h[2 * bi + 1], o + bi * nb * na, work.data(), nt);
    }
  }
  return out;
}

}  // namespace

void register_kde(py::module_& m) {
  m.def("kde_grid_2d", &kde_grid_2d, py::arg("samples"), py::arg("a_centres"), py::arg("b_centres"),
        py::arg("bandwidth"), py::arg("threads") = py::none(),
        "Gaussian product-kernel density of each sample set on the grid: samples (batch, m, 2), "
        "a_centres (n_a,), b_centres (n_b,), bandwidth (batch, 2) -> (batch, n_b, n_a).");
}

}  // namespace fcmlc

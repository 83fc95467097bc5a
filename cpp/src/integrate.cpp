// Kernels: deterministic blocked matrix product and the Eq. 2 integration
//   p(y|x)[c] = sum_k T[k, c] * p(y_hat_k|x) * dA_k
// for a batch of p(y_hat|x) on the y_hat grid (see fcmlc/integrate.hpp).
#include "fcmlc/integrate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "fcmlc/common.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FCMLC_X86 1
#else
#define FCMLC_X86 0
#endif

namespace fcmlc {

namespace {

using idx = std::ptrdiff_t;

constexpr idx KB = 128;  // k rows per packed block
constexpr idx NB = 128;  // columns per block (16 panels of NR)
constexpr idx NR = 8;    // panel width (two AVX2 registers)
constexpr idx MR = 6;    // rows per micro-kernel call (12 accumulator registers)
constexpr idx STREAM_ROWS = 4;  // fewer rows than this: stream B row by row
constexpr idx MB = 256;  // maximum rows per tile (keeps the C tile in L2)

bool detect_avx2() {
#if FCMLC_X86 && defined(__GNUC__)
  const char* env = std::getenv("FCMLC_NO_SIMD");
  if (env && env[0] && !(env[0] == '0' && env[1] == '\0')) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool use_avx2() {
  static const bool v = detect_avx2();
  return v;
}

// A value is a valid density when it is >= 0 and finite (NaN fails the first test).
inline bool bad_density(double v) { return !(v >= 0.0) || v > std::numeric_limits<double>::max(); }

// ---- packing -----------------------------------------------------------------
// B[0:kn, 0:nn] (leading dimension ldb) -> panels of NR columns, zero padded:
// P[p * kn * NR + k * NR + c] = B[k, p * NR + c]. With check, returns whether any
// packed value is negative or non-finite (the one pass over B doubles as validation).
bool pack_panels(const double* B, idx ldb, idx kn, idx nn, double* P, bool check) {
  const idx np = (nn + NR - 1) / NR;
  bool bad = false;
  for (idx k = 0; k < kn; ++k) {
    const double* src = B + k * ldb;
    if (check)
      for (idx c = 0; c < nn; ++c) bad |= bad_density(src[c]);
    for (idx p = 0; p < np; ++p) {
      double* dst = P + p * kn * NR + k * NR;
      const idx c0 = p * NR, w = std::min(NR, nn - c0);
      idx c = 0;
      for (; c < w; ++c) dst[c] = src[c0 + c];
      for (; c < NR; ++c) dst[c] = 0.0;
    }
  }
  return bad;
}

// ---- portable arithmetic: one multiply and one add per term -------------------
template <int R>
void micro_portable(const double* A, idx lda, const double* P, idx kn, double* acc) {
  for (idx k = 0; k < kn; ++k) {
    const double* b = P + k * NR;
    for (int r = 0; r < R; ++r) {
      const double a = A[r * lda + k];
      for (idx c = 0; c < NR; ++c) acc[r * NR + c] = acc[r * NR + c] + a * b[c];
    }
  }
}

bool axpy_portable(double a, const double* b, double* c, idx n, bool check) {
  bool bad = false;
  for (idx j = 0; j < n; ++j) c[j] = c[j] + a * b[j];
  if (check)
    for (idx j = 0; j < n; ++j) bad |= bad_density(b[j]);
  return bad;
}

// ---- AVX2 + FMA arithmetic: one fused multiply-add per term -------------------
#if FCMLC_X86 && defined(__GNUC__)
// R x 8 block of C held in 2R named registers (an array of __m256d gets spilled).
#define FCMLC_ROW(r)                                      \
  if constexpr (R > r) {                                  \
    const __m256d a = _mm256_broadcast_sd(A + r * lda + k); \
    c##r##0 = _mm256_fmadd_pd(a, b0, c##r##0);            \
    c##r##1 = _mm256_fmadd_pd(a, b1, c##r##1);            \
  }
template <int R>
__attribute__((target("avx2,fma"))) void micro_avx2(const double* A, idx lda, const double* P, idx kn, double* acc) {
  const __m256d z = _mm256_setzero_pd();
  __m256d c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
#define FCMLC_LOAD(r) \
  if constexpr (R > r) c##r##0 = _mm256_loadu_pd(acc + r * NR), c##r##1 = _mm256_loadu_pd(acc + r * NR + 4);
  FCMLC_LOAD(0) FCMLC_LOAD(1) FCMLC_LOAD(2) FCMLC_LOAD(3) FCMLC_LOAD(4) FCMLC_LOAD(5)
#undef FCMLC_LOAD
  for (idx k = 0; k < kn; ++k) {
    const __m256d b0 = _mm256_loadu_pd(P + k * NR);
    const __m256d b1 = _mm256_loadu_pd(P + k * NR + 4);
    FCMLC_ROW(0) FCMLC_ROW(1) FCMLC_ROW(2) FCMLC_ROW(3) FCMLC_ROW(4) FCMLC_ROW(5)
  }
#define FCMLC_STORE(r) \
  if constexpr (R > r) _mm256_storeu_pd(acc + r * NR, c##r##0), _mm256_storeu_pd(acc + r * NR + 4, c##r##1);
  FCMLC_STORE(0) FCMLC_STORE(1) FCMLC_STORE(2) FCMLC_STORE(3) FCMLC_STORE(4) FCMLC_STORE(5)
#undef FCMLC_STORE
}
#undef FCMLC_ROW

__attribute__((target("avx2,fma"))) bool axpy_avx2(double a, const double* b, double* c, idx n, bool check) {
  const __m256d va = _mm256_set1_pd(a);
  const __m256d zero = _mm256_setzero_pd(), big = _mm256_set1_pd(std::numeric_limits<double>::max());
  __m256d badv = _mm256_setzero_pd();
  idx j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256d b0 = _mm256_loadu_pd(b + j), b1 = _mm256_loadu_pd(b + j + 4);
    if (check) {  // not (b >= 0), or b > max: negative, NaN or +inf
      badv = _mm256_or_pd(badv, _mm256_cmp_pd(b0, zero, _CMP_NGE_UQ));
      badv = _mm256_or_pd(badv, _mm256_cmp_pd(b1, zero, _CMP_NGE_UQ));
      badv = _mm256_or_pd(badv, _mm256_cmp_pd(b0, big, _CMP_GT_OQ));
      badv = _mm256_or_pd(badv, _mm256_cmp_pd(b1, big, _CMP_GT_OQ));
    }
    _mm256_storeu_pd(c + j, _mm256_fmadd_pd(va, b0, _mm256_loadu_pd(c + j)));
    _mm256_storeu_pd(c + j + 4, _mm256_fmadd_pd(va, b1, _mm256_loadu_pd(c + j + 4)));
  }
  bool bad = _mm256_movemask_pd(badv) != 0;
  for (; j < n; ++j) {
    // Scalar FMA, the same rounding as the vector lanes.
    const __m128d r = _mm_fmadd_sd(_mm_set_sd(a), _mm_set_sd(b[j]), _mm_set_sd(c[j]));
    c[j] = _mm_cvtsd_f64(r);
    if (check) bad |= bad_density(b[j]);
  }
  return bad;
}
#endif

template <int R>
inline void micro(bool avx, const double* A, idx lda, const double* P, idx kn, double* acc) {
#if FCMLC_X86 && defined(__GNUC__)
  if (avx) return micro_avx2<R>(A, lda, P, kn, acc);
#endif
  (void)avx;
  micro_portable<R>(A, lda, P, kn, acc);
}

inline bool axpy(bool avx, double a, const double* b, double* c, idx n, bool check) {
#if FCMLC_X86 && defined(__GNUC__)
  if (avx) return axpy_avx2(a, b, c, n, check);
#endif
  (void)avx;
  return axpy_portable(a, b, c, n, check);
}

// C[i0:i1, j0:j1] = A[i0:i1, :] B[:, j0:j1]; P is a KB * NB scratch buffer.
bool gemm_tile(bool avx, const double* A, idx lda, const double* B, idx ldb, double* C, idx ldc, idx i0, idx i1, idx j0,
               idx j1, idx K, double* P, bool check) {
  const idx nn = j1 - j0, np = (nn + NR - 1) / NR;
  bool bad = false;
  for (idx i = i0; i < i1; ++i) std::fill(C + i * ldc + j0, C + i * ldc + j1, 0.0);
  for (idx k0 = 0; k0 < K; k0 += KB) {
    const idx kn = std::min(KB, K - k0);
    bad |= pack_panels(B + k0 * ldb + j0, ldb, kn, nn, P, check);
    for (idx i = i0; i < i1; i += MR) {
      const idx r = std::min(MR, i1 - i);
      for (idx p = 0; p < np; ++p) {
        const idx c0 = j0 + p * NR, w = std::min(NR, j1 - c0);
        alignas(32) double acc[MR * NR];
        for (idx rr = 0; rr < r; ++rr)
          for (idx c = 0; c < NR; ++c) acc[rr * NR + c] = c < w ? C[(i + rr) * ldc + c0 + c] : 0.0;
        const double* Ai = A + i * lda + k0;
        const double* Pp = P + p * kn * NR;
        switch (r) {
          case 6: micro<6>(avx, Ai, lda, Pp, kn, acc); break;
          case 5: micro<5>(avx, Ai, lda, Pp, kn, acc); break;
          case 4: micro<4>(avx, Ai, lda, Pp, kn, acc); break;
          case 3: micro<3>(avx, Ai, lda, Pp, kn, acc); break;
          case 2: micro<2>(avx, Ai, lda, Pp, kn, acc); break;
          default: micro<1>(avx, Ai, lda, Pp, kn, acc); break;
        }
        for (idx rr = 0; rr < r; ++rr)
          for (idx c = 0; c < w; ++c) C[(i + rr) * ldc + c0 + c] = acc[rr * NR + c];
      }
    }
  }
  return bad;
}

// Few rows: stream B once, row by row (memory-bound regime, e.g. one fit).
bool gemm_stream(bool avx, const double* A, idx lda, const double* B, idx ldb, double* C, idx ldc, idx M, idx j0, idx j1,
                 idx K, bool check) {
  bool bad = false;
  for (idx i = 0; i < M; ++i) std::fill(C + i * ldc + j0, C + i * ldc + j1, 0.0);
  for (idx k = 0; k < K; ++k)
    for (idx i = 0; i < M; ++i)
      bad |= axpy(avx, A[i * lda + k], B + k * ldb + j0, C + i * ldc + j0, j1 - j0, check && i == 0);
  return bad;
}

inline idx ceil_div(idx a, idx b) { return (a + b - 1) / b; }

}  // namespace

const char* gemm_isa() { return use_avx2() ? "avx2-fma" : "portable"; }

std::size_t gemm_scratch_doubles(int nt) { return static_cast<std::size_t>(std::max(nt, 1)) * KB * NB; }

bool gemm_deterministic(const double* A, idx lda, const double* B, idx ldb, double* C, idx ldc, idx M, idx N, idx K,
                        int nt, double* scratch, bool check_b) {
  if (M <= 0 || N <= 0) return false;
  // At least ~64k multiply-adds per thread: below that, waking threads costs more
  // than it saves (the split never changes the arithmetic, only the speed).
  const double work = static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  nt = static_cast<int>(std::max(1.0, std::min(static_cast<double>(std::max(nt, 1)), work / 65536.0)));
  const bool avx = use_avx2();
  if (K <= 0) {
    for (idx i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0);
    return false;
  }
  bool bad = false;
  if (M < STREAM_ROWS) {
    // Contiguous column ranges (multiples of NR) per thread.
    const idx nchunks = std::min<idx>(nt, ceil_div(N, NR));
    const idx per = ceil_div(ceil_div(N, NR), nchunks) * NR;
    if (nchunks <= 1) return gemm_stream(avx, A, lda, B, ldb, C, ldc, M, 0, N, K, check_b);
#pragma omp parallel for num_threads(static_cast<int>(nchunks)) schedule(static) reduction(|| : bad)
    for (idx t = 0; t < nchunks; ++t) {
      const idx j0 = std::min(N, t * per), j1 = std::min(N, j0 + per);
      if (j1 > j0) bad = gemm_stream(avx, A, lda, B, ldb, C, ldc, M, j0, j1, K, check_b) || bad;
    }
    return bad;
  }
  const idx ncb = ceil_div(N, NB);
  idx nrb = ceil_div(M, MB);
  if (nrb * ncb < nt) nrb = std::min(ceil_div(M, MR), ceil_div(nt, ncb));
  const idx rows_per = ceil_div(ceil_div(M, nrb), MR) * MR;
  nrb = ceil_div(M, rows_per);
  const idx ntiles = nrb * ncb;
  const int nthr = static_cast<int>(std::min<idx>(nt, ntiles));
  // Only the first row block checks B (every row block packs all of B's columns in
  // its tiles, so one of them sees every element).
  // Scratch allocated before any parallel region (bad_alloc cannot escape one).
  std::unique_ptr<double[]> owned;
  if (!scratch) {
    owned.reset(new double[gemm_scratch_doubles(nthr)]);
    scratch = owned.get();
  }
  if (nthr <= 1) {
    for (idx t = 0; t < ntiles; ++t) {
      const idx rb = t / ncb, cb = t % ncb;
      bad |= gemm_tile(avx, A, lda, B, ldb, C, ldc, rb * rows_per, std::min(M, (rb + 1) * rows_per), cb * NB,
                       std::min(N, (cb + 1) * NB), K, scratch, check_b && rb == 0);
    }
    return bad;
  }
#pragma omp parallel num_threads(nthr) reduction(|| : bad)
  {
#if FCMLC_HAVE_OPENMP
    double* P = scratch + static_cast<std::size_t>(omp_get_thread_num()) * KB * NB;
#else
    double* P = scratch;
#endif
#pragma omp for schedule(static)
    for (idx t = 0; t < ntiles; ++t) {
      const idx rb = t / ncb, cb = t % ncb;
      bad = gemm_tile(avx, A, lda, B, ldb, C, ldc, rb * rows_per, std::min(M, (rb + 1) * rows_per), cb * NB,
                      std::min(N, (cb + 1) * NB), K, P, check_b && rb == 0) || bad;
    }
  }
  return bad;
}

namespace {

// ---- Python-facing kernels ------------------------------------------------------

py::array_t<double> matmul_deterministic(const carray<double>& A, const carray<double>& B, std::optional<int> threads) {
  require_ndim(A, 2, "A");
  require_ndim(B, 2, "B");
  require(A.shape(1) == B.shape(0), "A and B do not conform: A has shape " + shape_str(A.shape(0), A.shape(1)) +
                                        ", B has shape " + shape_str(B.shape(0), B.shape(1)));
  const int nt = resolve_threads(threads);
  const idx M = A.shape(0), K = A.shape(1), N = B.shape(1);
  py::array_t<double> out({M, N});
  const double* a = A.data();
  const double* b = B.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    gemm_deterministic(a, K, b, N, o, N, M, N, K, nt);
  }
  return out;
}

// First flat index i in [0, n) with !(p[i] >= 0 && finite), or n; parallel, deterministic.
idx first_bad_nonneg(const double* p, idx n, int nt) {
  idx best = n;
  const idx chunk = 1 << 16;
  const idx nchunks = ceil_div(n, chunk);
  std::vector<idx> found(static_cast<std::size_t>(std::max<idx>(nchunks, 1)), n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (idx c = 0; c < nchunks; ++c) {
    const idx lo = c * chunk, hi = std::min(n, lo + chunk);
    bool bad = false;
    for (idx i = lo; i < hi; ++i) bad |= !(p[i] >= 0.0 && p[i] <= std::numeric_limits<double>::max());
    if (bad)
      for (idx i = lo; i < hi; ++i)
        if (!(p[i] >= 0.0 && p[i] <= std::numeric_limits<double>::max())) {
          found[c] = i;
          break;
        }
  }
  for (idx v : found) best = std::min(best, v);
  return best;
}

std::string describe_value(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// p(y|x)[b, c] = sum_k T[k, c] p_yhat[b, k] cell_area[k]
py::array_t<double> integrate_grid(const carray<double>& p_yhat, const carray<double>& transition,
                                   const carray<double>& cell_area, std::optional<int> threads, bool check_transition) {
  require_ndim(p_yhat, 2, "p_yhat");
  require_ndim(transition, 2, "transition");
  require_ndim(cell_area, 1, "cell_area");
  const idx Bn = p_yhat.shape(0), K = p_yhat.shape(1), C = transition.shape(1);
  require(K >= 1, "p_yhat must have at least one y_hat cell, got shape " + shape_str(Bn, K));
  require(transition.shape(0) == K,
          "transition must have shape (n_yhat_cells, n_y_cells) = (" + std::to_string(K) +
              ", n_y_cells) to match p_yhat with shape " + shape_str(Bn, K) + "; got " +
              shape_str(transition.shape(0), transition.shape(1)));
  require(cell_area.shape(0) == K, "cell_area must have one entry per y_hat cell (" + std::to_string(K) + "), got " +
                                       std::to_string(cell_area.shape(0)));
  const int nt = resolve_threads(threads);
  const double* p = p_yhat.data();
  const double* T = transition.data();
  const double* dA = cell_area.data();
  for (idx k = 0; k < K; ++k)
    if (!(dA[k] > 0.0 && std::isfinite(dA[k])))
      throw py::value_error("cell_area must be finite and > 0; cell_area[" + std::to_string(k) +
                            "] = " + describe_value(dA[k]));
  for (idx b = 0; b < Bn; ++b)
    for (idx k = 0; k < K; ++k) {
      const double v = p[b * K + k];
      if (!(v >= 0.0 && std::isfinite(v)))
        throw py::value_error("p_yhat must be a finite, non-negative density; p_yhat[" + std::to_string(b) + ", " +
                              std::to_string(k) + "] (batch " + std::to_string(b) + ", y_hat cell " +
                              std::to_string(k) + ") = " + describe_value(v));
    }
  // T is validated during the product's one pass over it (no extra memory traffic);
  // the slow search for the position only runs when something is wrong.
  py::array_t<double> out({Bn, C});
  double* o = out.mutable_data();
  bool overflow = false, t_bad = false;
  {
    py::gil_scoped_release nogil;
    std::vector<double> W(static_cast<std::size_t>(Bn) * K);
    for (idx b = 0; b < Bn; ++b)
      for (idx k = 0; k < K; ++k) W[b * K + k] = p[b * K + k] * dA[k];
    t_bad = gemm_deterministic(W.data(), K, T, C, o, C, Bn, C, K, nt, nullptr, check_transition);
    if (check_transition && Bn == 0) t_bad = first_bad_nonneg(T, K * C, nt) < K * C;
    for (idx i = 0; i < Bn * C; ++i) overflow |= !std::isfinite(o[i]);
  }
  if (t_bad || overflow) {
    idx bad;
    {
      py::gil_scoped_release nogil;
      bad = first_bad_nonneg(T, K * C, nt);
    }
    const bool report = bad < K * C && (check_transition || !std::isfinite(T[bad]));
    if (report)
      throw py::value_error("transition must be a finite, non-negative density p(y | y_hat); transition[" +
                            std::to_string(bad / C) + ", " + std::to_string(bad % C) + "] (y_hat cell " +
                            std::to_string(bad / C) + ", y cell " + std::to_string(bad % C) +
                            ") = " + describe_value(T[bad]));
    throw py::value_error("p(y|x) overflowed double precision: the inputs are finite but their product is not; "
                          "rescale p_yhat or the transition matrix");
  }
  return out;
}

}  // namespace

void register_integrate(py::module_& m) {
  m.def("gemm_isa", [] { return std::string(gemm_isa()); },
        "Arithmetic path of the deterministic matrix product in this process: 'avx2-fma' or 'portable'.");
  m.def("matmul_deterministic", &matmul_deterministic, py::arg("A"), py::arg("B"), py::arg("threads") = py::none(),
        "A @ B with every element accumulated in increasing k (bit-identical for any thread count).");
  m.def("integrate_grid", &integrate_grid, py::arg("p_yhat"), py::arg("transition"), py::arg("cell_area"),
        py::arg("threads") = py::none(), py::arg("check_transition") = true,
        "Eq. 2 on grids: out[b, c] = sum_k transition[k, c] * p_yhat[b, k] * cell_area[k]. "
        "p_yhat (batch, n_k), transition (n_k, n_c), cell_area (n_k,) -> (batch, n_c).");
}

}  // namespace fcmlc

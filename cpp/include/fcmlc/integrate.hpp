// Deterministic dense matrix product used by the KDE (separable Gaussian kernel)
// and by the Eq. 2 integration p(y|x) = sum_k T[k, :] p(y_hat_k|x) dA_k.
//
// C[i, j] = sum_{k=0}^{K-1} A[i, k] * B[k, j], every element accumulated in
// increasing k from 0.0 with one fused multiply-add per term (AVX2/FMA path) or
// one multiply and one add per term (portable path). Blocking, packing, vector
// width and the thread split only change which element is computed where, never
// the arithmetic, so results are bit-identical for any thread count and any
// batch composition. The path is fixed per process: AVX2+FMA when the CPU has
// it, unless the environment variable FCMLC_NO_SIMD is set to a non-empty value
// other than "0" at import time.
#pragma once

#include <cstddef>

namespace fcmlc {

// Row-major operands with leading dimensions (elements between rows).
// A: M x K, B: K x N, C: M x N (overwritten). nt: threads to use (1 = serial,
// safe to call from inside an OpenMP region). Never throws from inside a
// parallel region. scratch: nullptr (allocated here; may throw std::bad_alloc,
// before any parallel region) or at least gemm_scratch_doubles(nt) doubles, in
// which case nothing is allocated and nothing throws. check_b: also report whether
// any element of B is negative or non-finite (done during the one pass over B that
// the product makes anyway); the return value is that finding (false when not asked).
bool gemm_deterministic(const double* A, std::ptrdiff_t lda, const double* B, std::ptrdiff_t ldb, double* C,
                        std::ptrdiff_t ldc, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, int nt,
                        double* scratch = nullptr, bool check_b = false);

// Scratch size (in doubles) that gemm_deterministic needs for nt threads.
std::size_t gemm_scratch_doubles(int nt);

// "avx2-fma" or "portable": the arithmetic path gemm_deterministic uses in this process.
const char* gemm_isa();

}  // namespace fcmlc

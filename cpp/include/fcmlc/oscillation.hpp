// Bin-averaged oscillation: the mean of sin^2(K dm2 L / E) over a uniform box
// [L1, L2] x [E1, E2] (L in m, E in MeV, dm2 in eV^2), computed exactly.
//
// Closed forms (a = 2 K dm2, c = a L, sin^2 = (1 - cos)/2):
//   mean over L of cos(a L / E)  = cos(a Lm / E) sinc(a dL / 2E)            (exact)
//   int cos(c / E) dE            = G(c; E) = E cos(c/E) + c Si(c/E)
//   int E sin(c / E) dE          = F(c; E) = E^2/2 sin(c/E) + cE/2 cos(c/E) + c^2/2 Si(c/E)
//   mean over box of cos(aL/E)   = [F(aL2;E2) - F(aL2;E1) - F(aL1;E2) + F(aL1;E1)] / (a dL dE)
// Each form is used where it does not cancel: a box with a small phase span along E
// integrates the exact L-average (written without cancellation at small phases) with
// Gauss-Legendre nodes in E; a box narrow in L (and wide in E) integrates the exact
// E-average G over L; boxes wide in both use F.
#pragma once

#include <cmath>
#include <complex>

namespace fcmlc {

// 1/(4 hbar c) in eV^2 m / MeV units: 1e-12 / (4 * 197.3269804e-15 MeV m) = 1.26693268
constexpr double OSC_K = 1.2669326794198488;

// Sine integral pieces. si_series(x) = Si(x) for 0 <= x <= 4 (power series);
// si_tail(x) = Si(x) - pi/2 for x > 4, from the continued fraction of E1(ix)
// (modified Lentz), computed directly so that differences of Si at large
// arguments do not cancel.
inline double si_series(double x) {
  const double x2 = x * x;
  double term = x, sum = x;
  for (int n = 1; n < 60; ++n) {
    term *= -x2 / ((2.0 * n) * (2.0 * n + 1.0));
    const double add = term / (2.0 * n + 1.0);
    sum += add;
    if (std::fabs(add) < 1e-17 * std::fabs(sum)) break;
  }
  return sum;
}

inline double si_tail(double x) {
  using cd = std::complex<double>;
  const double tiny = 1e-300;
  cd b(1.0, x);
  cd c(1.0 / tiny, 0.0);
  cd d = 1.0 / b;
  cd h = d;
  for (int i = 2; i < 1000; ++i) {
    const double an = -static_cast<double>(i - 1) * static_cast<double>(i - 1);
    b += 2.0;
    d = 1.0 / (an * d + b);
    c = b + an / c;
    const cd del = c * d;
    h *= del;
    if (std::fabs(del.real() - 1.0) + std::fabs(del.imag()) < 1e-16) break;
  }
  h *= cd(std::cos(x), -std::sin(x));
  return h.imag();
}

constexpr double HALF_PI = 1.5707963267948966192313216916398;

// Si(x), any real x.
inline double sine_integral(double x) {
  if (x < 0) return -sine_integral(-x);
  return x <= 4.0 ? si_series(x) : HALF_PI + si_tail(x);
}

// Si(x2) - Si(x1) for x1, x2 >= 0, without cancelling the pi/2 at large arguments.
inline double si_diff(double x2, double x1) {
  if (x1 > 4.0 && x2 > 4.0) return si_tail(x2) - si_tail(x1);
  return sine_integral(x2) - sine_integral(x1);
}

namespace detail {

// 8-point Gauss-Legendre nodes/weights on [-1, 1].
constexpr double GL_X[8] = {-0.9602898564975363, -0.7966664774136267, -0.5255324099163290,
                            -0.1834346424956498, 0.1834346424956498,  0.5255324099163290,
                            0.7966664774136267,  0.9602898564975363};
constexpr double GL_W[8] = {0.1012285362903763, 0.2223810344533745, 0.3137066458778873,
                            0.3626837833783620, 0.3626837833783620, 0.3137066458778873,
                            0.2223810344533745, 0.1012285362903763};
// 4-point rule, for panels whose phase span is <= 1/4 rad: its error term
// (4!)^4 / (9 (8!)^3) phi^8 ~ 5.6e-10 phi^8 is then below 1e-14.
constexpr double GL4_X[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
constexpr double GL4_W[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};

inline double sinc(double x) {
  if (std::fabs(x) < 1e-4) return 1.0 - x * x / 6.0;
  return std::sin(x) / x;
}

// 1 - sin(y)/y without cancellation at small y (series through y^12 below 0.5: the
// first omitted term is < 5e-17 of the result).
inline double one_minus_sinc(double y) {
  const double y2 = y * y;
  if (y2 < 0.25) {
    return y2 * (1.0 / 6 - y2 * (1.0 / 120 - y2 * (1.0 / 5040 - y2 * (1.0 / 362880 - y2 * (1.0 / 39916800 -
                 y2 * (1.0 / 6227020800.0))))));
  }
  return 1.0 - std::sin(y) / y;
}

// Exact mean over L in [Lm - dL/2, Lm + dL/2] of sin^2(a L / 2E):
//   1/2 (1 - cos(x) sinc(y)) = sin^2(x/2) + cos(x)/2 (1 - sinc(y)),  x = a Lm / E, y = a dL / 2E,
// written so that small phases do not cancel; cos(x) = 1 - 2 sin^2(x/2) reuses the one sine.
inline double mean_over_L_sin2(double a, double Lm, double dL, double E) {
  const double h = std::sin(0.5 * a * Lm / E);
  const double h2 = h * h;
  return h2 + 0.5 * (1.0 - 2.0 * h2) * one_minus_sinc(0.5 * a * dL / E);
}

// Number of panels so that E_hi / E_lo <= 1.25 on each panel (1/E is then
// resolved by 8 nodes to ~1e-20) and the phase change per panel <= 2 rad.
inline int e_panels(double E1, double E2, double phiE) {
  int n = static_cast<int>(std::ceil(std::log(E2 / E1) / std::log(1.25)));
  int m = static_cast<int>(std::ceil(phiE / 2.0));
  n = n > m ? n : m;
  return n < 1 ? 1 : n;
}

// G(c; E2) - G(c; E1), G(c; E) = E cos(c/E) + c Si(c/E) = int cos(c/E) dE.
inline double dG(double c, double E2, double E1) {
  return E2 * std::cos(c / E2) - E1 * std::cos(c / E1) + c * si_diff(c / E2, c / E1);
}

// F(c; E2) - F(c; E1), F(c; E) = E^2/2 sin(c/E) + cE/2 cos(c/E) + c^2/2 Si(c/E) = int E sin(c/E) dE.
inline double dF(double c, double E2, double E1) {
  const double t2 = c / E2, t1 = c / E1;
  return 0.5 * (E2 * E2 * std::sin(t2) - E1 * E1 * std::sin(t1)) +
         0.5 * c * (E2 * std::cos(t2) - E1 * std::cos(t1)) + 0.5 * c * c * si_diff(t2, t1);
}

}  // namespace detail

// Mean of sin^2(K dm2 L / E) over the uniform box. Inputs assumed validated:
// dm2 >= 0, 0 <= L1 <= L2, 0 < E1 <= E2.
inline double box_mean_sin2(double dm2, double L1, double L2, double E1, double E2) {
  using namespace detail;
  if (dm2 == 0.0) return 0.0;
  const double k = OSC_K * dm2, a = 2.0 * k;
  const double dL = L2 - L1, dE = E2 - E1;
  if (dL == 0.0 && dE == 0.0) {
    const double s = std::sin(k * L1 / E1);
    return s * s;
  }
  const double phiL = a * dL / E1;                     // phase span along L
  const double phiE = a * L2 * (1.0 / E1 - 1.0 / E2);  // phase span along E
  const double Lm = 0.5 * (L1 + L2);
  if (dE == 0.0) return mean_over_L_sin2(a, Lm, dL, E1);
  if (phiE <= 2.0) {
    // Slow along E (any phase span along L): Gauss-Legendre over E of the exact L-average,
    // panels keeping E2/E1 <= 1.25 and <= 2 rad per panel (8 nodes: ~1e-14 relative);
    // 4 nodes for a single panel of <= 1/4 rad and E2/E1 <= 1.05 (the true-energy steps).
    // The phase of both the L-mean (x) and its sinc factor (y) changes by at most phiE over the box.
    const int nE = e_panels(E1, E2, phiE);
    const double hE = dE / nE;
    if (nE == 1 && phiE <= 0.25 && E2 <= 1.05 * E1) {
      const double eMid = 0.5 * (E1 + E2);
      double acc = 0.0;
      for (int j = 0; j < 4; ++j) acc += GL4_W[j] * mean_over_L_sin2(a, Lm, dL, eMid + 0.5 * hE * GL4_X[j]);
      return 0.5 * acc;
    }
    double acc = 0.0;
    for (int p = 0; p < nE; ++p) {
      const double eMid = E1 + (p + 0.5) * hE;
      for (int j = 0; j < 8; ++j) acc += GL_W[j] * mean_over_L_sin2(a, Lm, dL, eMid + 0.5 * hE * GL_X[j]);
    }
    return 0.5 * acc / nE;
  }
  if (dL == 0.0) return 0.5 * (1.0 - dG(a * L1, E2, E1) / dE);
  if (phiL <= 2.0) {
    // Narrow in L: Gauss-Legendre over L of the exact E-average.
    double acc = 0.0;
    for (int i = 0; i < 8; ++i) {
      const double c = a * (Lm + 0.5 * dL * GL_X[i]);
      acc += 0.5 * GL_W[i] * dG(c, E2, E1);
    }
    return 0.5 * (1.0 - acc / dE);
  }
  // Wide in both: closed form with the sine integral.
  const double cl = a * L1, ch = a * L2;
  const double mean_cos = (dF(ch, E2, E1) - dF(cl, E2, E1)) / (a * dL * dE);
  return 0.5 * (1.0 - mean_cos);
}

}  // namespace fcmlc

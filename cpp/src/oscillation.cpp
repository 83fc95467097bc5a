// Kernels: bin-averaged oscillation over (L, E) boxes, for many dm2 values.
#include "fcmlc/common.hpp"
#include "fcmlc/oscillation.hpp"

#include <vector>

namespace fcmlc {

namespace {

void validate_boxes(const carray<double>& boxes) {
  require_ndim(boxes, 2, "boxes");
  require(boxes.shape(1) == 4, "boxes must have shape (n_boxes, 4) with columns L_lo, L_hi, E_lo, E_hi; got " +
                                   shape_str(boxes.shape(0), boxes.shape(1)));
  require_finite(boxes, "boxes");
  auto b = boxes.unchecked<2>();
  for (py::ssize_t i = 0; i < boxes.shape(0); ++i) {
    const double L1 = b(i, 0), L2 = b(i, 1), E1 = b(i, 2), E2 = b(i, 3);
    if (!(L1 >= 0.0 && L2 >= L1))
      throw py::value_error("box " + std::to_string(i) + ": need 0 <= L_lo <= L_hi (metres), got L_lo=" +
                            std::to_string(L1) + ", L_hi=" + std::to_string(L2));
    if (!(E1 > 0.0 && E2 >= E1))
      throw py::value_error("box " + std::to_string(i) + ": need 0 < E_lo <= E_hi (MeV), got E_lo=" +
                            std::to_string(E1) + ", E_hi=" + std::to_string(E2));
  }
}

void validate_dm2(const carray<double>& dm2) {
  require_ndim(dm2, 1, "dm2");
  require_finite(dm2, "dm2");
  const double* d = dm2.data();
  for (py::ssize_t i = 0; i < dm2.size(); ++i)
    if (d[i] < 0.0) throw py::value_error("dm2 must be >= 0 eV^2, got " + std::to_string(d[i]) + " at index " + std::to_string(i));
}

// out[j, b] = mean sin^2 over box b at dm2[j]
py::array_t<double> box_mean_sin2_grid(const carray<double>& dm2, const carray<double>& boxes,
                                       std::optional<int> threads) {
  validate_dm2(dm2);
  validate_boxes(boxes);
  const int nt = resolve_threads(threads);
  const py::ssize_t nd = dm2.shape(0), nb = boxes.shape(0);
  py::array_t<double> out({nd, nb});
  const double* d = dm2.data();
  const double* b = boxes.data();
  double* o = out.mutable_data();
  ExceptionCapture ex;
  {
    py::gil_scoped_release nogil;
    const long long total = static_cast<long long>(nd) * nb;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long long idx = 0; idx < total; ++idx) {
      ex.run([&] {
        const long long j = idx / nb, i = idx % nb;
        const double* bx = b + 4 * i;
        o[idx] = box_mean_sin2(d[j], bx[0], bx[1], bx[2], bx[3]);
      });
    }
  }
  ex.rethrow();
  return out;
}

// Element-wise version for broadcast inputs (all 1-D, same length).
py::array_t<double> box_mean_sin2_elementwise(const carray<double>& dm2, const carray<double>& L1,
                                              const carray<double>& L2, const carray<double>& E1,
                                              const carray<double>& E2, std::optional<int> threads) {
  validate_dm2(dm2);
  const py::ssize_t n = dm2.shape(0);
  for (auto* a : {&L1, &L2, &E1, &E2}) {
    require_ndim(*a, 1, "L/E arrays");
    require(a->shape(0) == n, "dm2, L_lo, L_hi, E_lo, E_hi must have the same length");
  }
  carray<double> boxes({n, py::ssize_t(4)});
  {
    auto bx = boxes.mutable_unchecked<2>();
    for (py::ssize_t i = 0; i < n; ++i) {
      bx(i, 0) = L1.data()[i];
      bx(i, 1) = L2.data()[i];
      bx(i, 2) = E1.data()[i];
      bx(i, 3) = E2.data()[i];
    }
  }
  validate_boxes(boxes);
  const int nt = resolve_threads(threads);
  py::array_t<double> out(n);
  const double* d = dm2.data();
  const double* b = boxes.data();
  double* o = out.mutable_data();
  ExceptionCapture ex;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (py::ssize_t i = 0; i < n; ++i) {
      ex.run([&] { o[i] = box_mean_sin2(d[i], b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]); });
    }
  }
  ex.rethrow();
  return out;
}

// Oscillation deficit per bin: D[j, r] = sum_c W[r, c] * mean_sin2(dm2[j], box c), W in CSR form
// (indptr (n_bins+1,), indices, weights). The bin expectation is N0[r] - sin^2(2 theta) * D[j, r].
py::array_t<double> bin_deficit(const carray<double>& dm2, const carray<double>& boxes,
                                const carray<std::int64_t>& indptr, const carray<std::int64_t>& indices,
                                const carray<double>& weights, std::optional<int> threads) {
  validate_dm2(dm2);
  validate_boxes(boxes);
  require_ndim(indptr, 1, "indptr");
  require_ndim(indices, 1, "indices");
  require_ndim(weights, 1, "weights");
  require(indptr.shape(0) >= 1, "indptr must have n_bins + 1 entries");
  require(indices.shape(0) == weights.shape(0), "indices and weights must have the same length");
  require_finite(weights, "weights");
  const py::ssize_t nbins = indptr.shape(0) - 1, nb = boxes.shape(0), nd = dm2.shape(0);
  const std::int64_t* ip = indptr.data();
  const std::int64_t* ix = indices.data();
  require(ip[0] == 0 && ip[nbins] == indices.shape(0), "indptr must start at 0 and end at len(indices)");
  for (py::ssize_t r = 0; r < nbins; ++r) require(ip[r] <= ip[r + 1], "indptr must be non-decreasing");
  for (py::ssize_t c = 0; c < indices.shape(0); ++c)
    require(ix[c] >= 0 && ix[c] < nb, "indices must lie in [0, n_boxes)");
  const int nt = resolve_threads(threads);
  py::array_t<double> out({nd, nbins});
  const double* d = dm2.data();
  const double* b = boxes.data();
  const double* w = weights.data();
  double* o = out.mutable_data();
  ExceptionCapture ex;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel num_threads(nt)
    {
      std::vector<double> m(nb);
#pragma omp for schedule(static)
      for (py::ssize_t j = 0; j < nd; ++j) {
        ex.run([&] {
          for (py::ssize_t c = 0; c < nb; ++c) m[c] = box_mean_sin2(d[j], b[4 * c], b[4 * c + 1], b[4 * c + 2], b[4 * c + 3]);
          for (py::ssize_t r = 0; r < nbins; ++r) {
            double acc = 0.0;
            for (std::int64_t q = ip[r]; q < ip[r + 1]; ++q) acc += w[q] * m[ix[q]];
            o[j * nbins + r] = acc;
          }
        });
      }
    }
  }
  ex.rethrow();
  return out;
}

}  // namespace

void register_oscillation(py::module_& m) {
  m.attr("OSC_K") = OSC_K;
  m.def("sine_integral", [](double x) { return sine_integral(x); }, py::arg("x"), "Si(x), the sine integral.");
  m.def("box_mean_sin2_grid", &box_mean_sin2_grid, py::arg("dm2"), py::arg("boxes"), py::arg("threads") = py::none(),
        "Mean of sin^2(K dm2 L/E) over each uniform (L, E) box, for each dm2: shape (n_dm2, n_boxes).");
  m.def("box_mean_sin2_elementwise", &box_mean_sin2_elementwise, py::arg("dm2"), py::arg("L_lo"), py::arg("L_hi"),
        py::arg("E_lo"), py::arg("E_hi"), py::arg("threads") = py::none(),
        "Element-wise mean of sin^2(K dm2 L/E) over boxes; all inputs 1-D of equal length.");
  m.def("bin_deficit", &bin_deficit, py::arg("dm2"), py::arg("boxes"), py::arg("indptr"), py::arg("indices"),
        py::arg("weights"), py::arg("threads") = py::none(),
        "Oscillation deficit per bin D[j, r] = sum_c W[r, c] mean_sin2(dm2[j], box c), W given in CSR form.");
}

}  // namespace fcmlc

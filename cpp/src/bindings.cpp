// The extension module fcmlc._core: one registration function per kernel family.
#include "fcmlc/common.hpp"

namespace fcmlc {
void register_rng(py::module_& m);
void register_oscillation(py::module_& m);
void register_sampling(py::module_& m);
void register_kde(py::module_& m);
void register_integrate(py::module_& m);
void register_chi2(py::module_& m);
void register_transition(py::module_& m);
void register_exact(py::module_& m);
}  // namespace fcmlc

PYBIND11_MODULE(_core, m) {
  m.doc() = "fcmlc compiled kernels (C++/OpenMP)";
#if FCMLC_HAVE_OPENMP
  m.attr("HAVE_OPENMP") = true;
#else
  m.attr("HAVE_OPENMP") = false;
#endif
  m.def("max_threads", [] { return fcmlc::resolve_threads(std::nullopt); }, "Number of threads used for threads=None.");
  fcmlc::register_rng(m);
  fcmlc::register_oscillation(m);
  fcmlc::register_sampling(m);
  fcmlc::register_kde(m);
  fcmlc::register_integrate(m);
  fcmlc::register_chi2(m);
  fcmlc::register_transition(m);
  fcmlc::register_exact(m);
}

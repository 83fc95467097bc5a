// Shared helpers for fcmlc kernels: thread counts, exception capture across
// OpenMP regions, and NumPy-array validation that raises ValueError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <exception>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#if FCMLC_HAVE_OPENMP
#include <omp.h>
#endif

namespace fcmlc {

namespace py = pybind11;

template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// Thread count: None -> all cores; otherwise must be >= 1.
inline int resolve_threads(std::optional<int> threads) {
#if FCMLC_HAVE_OPENMP
  int n = threads.has_value() ? *threads : omp_get_num_procs();
#else
  int n = threads.has_value() ? *threads : 1;
#endif
  if (n < 1) throw py::value_error("threads must be >= 1 (or None for all cores), got " + std::to_string(n));
#if !FCMLC_HAVE_OPENMP
  n = 1;
#endif
  return n;
}

// Collects the first exception thrown inside a parallel region so it can be
// rethrown after the region (no exception may escape an OpenMP region).
class ExceptionCapture {
 public:
  template <typename F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ptr_) ptr_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (ptr_) std::rethrow_exception(ptr_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr ptr_;
};

// ---- validation (call with the GIL held) ---------------------------------

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

template <typename T>
void require_ndim(const carray<T>& a, py::ssize_t ndim, const char* name) {
  if (a.ndim() != ndim) {
    std::ostringstream s;
    s << name << " must be a " << ndim << "-D array, got " << a.ndim() << "-D with shape (";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << ")";
    throw py::value_error(s.str());
  }
}

template <typename T>
void require_finite(const carray<T>& a, const char* name) {
  const T* p = a.data();
  for (py::ssize_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(p[i])) {
      std::ostringstream s;
      s << name << " contains a non-finite value (" << p[i] << ") at flat index " << i;
      throw py::value_error(s.str());
    }
  }
}

inline std::string shape_str(py::ssize_t a, py::ssize_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

}  // namespace fcmlc

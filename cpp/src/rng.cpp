// Kernels: raw counter-based random numbers (for tests and for Python-side draws
// that must follow the same keying as the C++ samplers).
#include "fcmlc/common.hpp"
#include "fcmlc/rng.hpp"

namespace fcmlc {

namespace {

// Raw Philox4x64-10 blocks for counters (block, c1, c2, c3), block = 0..n_blocks-1.
py::array_t<std::uint64_t> philox_blocks(std::uint64_t seed, std::uint64_t stream, std::uint64_t c1, std::uint64_t c2,
                                         std::uint64_t c3, py::ssize_t n_blocks) {
  require(n_blocks >= 0, "n_blocks must be >= 0");
  py::array_t<std::uint64_t> out({n_blocks, py::ssize_t(4)});
  auto o = out.mutable_unchecked<2>();
  const std::uint64_t key[2] = {seed, stream};
  for (py::ssize_t b = 0; b < n_blocks; ++b) {
    const std::uint64_t ctr[4] = {static_cast<std::uint64_t>(b), c1, c2, c3};
    auto r = Philox4x64::eval(ctr, key);
    for (int i = 0; i < 4; ++i) o(b, i) = r.v[i];
  }
  return out;
}

py::array_t<double> standard_normals(std::uint64_t seed, std::uint64_t stream, std::uint64_t c1, std::uint64_t c2,
                                     std::uint64_t c3, py::ssize_t n) {
  require(n >= 0, "n must be >= 0");
  py::array_t<double> out(n);
  normals(seed, stream, c1, c2, c3, out.mutable_data(), static_cast<std::size_t>(n));
  return out;
}

}  // namespace

void register_rng(py::module_& m) {
  m.attr("PURPOSE_RESIDUAL") = static_cast<std::uint64_t>(PURPOSE_RESIDUAL);
  m.attr("PURPOSE_PULL") = static_cast<std::uint64_t>(PURPOSE_PULL);
  m.attr("PURPOSE_STAT") = static_cast<std::uint64_t>(PURPOSE_STAT);
  m.attr("PURPOSE_FC_TOY") = static_cast<std::uint64_t>(PURPOSE_FC_TOY);
  m.attr("PURPOSE_NORM") = static_cast<std::uint64_t>(PURPOSE_NORM);
  m.def("philox_blocks", &philox_blocks, py::arg("seed"), py::arg("stream"), py::arg("c1"), py::arg("c2"),
        py::arg("c3"), py::arg("n_blocks"), "Raw Philox4x64-10 output for counters (b, c1, c2, c3), b < n_blocks.");
  m.def("standard_normals", &standard_normals, py::arg("seed"), py::arg("stream"), py::arg("c1"), py::arg("c2"),
        py::arg("c3"), py::arg("n"), "n standard normals of one keyed stream (ziggurat on Philox output).");
}

}  // namespace fcmlc

"""3+1 electron-(anti)neutrino disappearance: survival probabilities and the parameter grid.

P(nue -> nue) = 1 - sin^2(2 theta_ee) sin^2(K dm2 L / E),  sin^2(2 theta_ee) = 4 |Ue4|^2 (1 - |Ue4|^2),
with L in metres, E in MeV, dm2 in eV^2 and K = 1 / (4 hbar c) = 1.26693 eV^-2 MeV m^-1
(the "1.267" of the literature).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from . import _core
from .exceptions import OutOfMemoryError

try:
    import resource
except ImportError:  # pragma: no cover - not on POSIX
    resource = None

#: K in sin^2(K dm2 L / E): 1e-12 / (4 * 197.3269804e-15), eV^-2 MeV / m.
OSC_K: float = float(_core.OSC_K)

#: |Ue4| range of the paper: [0.001, 1/sqrt(2)] (|Ue4| <= 1/sqrt(2) covers all of sin^2(2 theta) in [0, 1]).
UE4_RANGE = (1e-3, 1.0 / np.sqrt(2.0))
#: dm2_41 range of the paper, eV^2.
DM2_RANGE = (1e-2, 10.0)


def sin2_2theta(ue4):
    """sin^2(2 theta_ee) = 4 |Ue4|^2 (1 - |Ue4|^2)."""
    u2 = np.square(np.asarray(ue4, dtype=float))
    return 4.0 * u2 * (1.0 - u2)


def ue4_from_sin2_2theta(s2):
    """Inverse of :func:`sin2_2theta` on the branch |Ue4| <= 1/sqrt(2)."""
    s2 = np.asarray(s2, dtype=float)
    if np.any((s2 < 0) | (s2 > 1)) or not np.all(np.isfinite(s2)):
        raise ValueError("sin^2(2 theta) must lie in [0, 1]")
    return np.sqrt(0.5 * (1.0 - np.sqrt(1.0 - s2)))


def check_params(ue4, dm2):
    """(|Ue4|, dm2) as float arrays, checked: finite, |Ue4| in [0, 1], dm2 >= 0 eV^2 (ValueError otherwise)."""
    ue4 = np.asarray(ue4, dtype=float)
    dm2 = np.asarray(dm2, dtype=float)
    if not (np.all(np.isfinite(ue4)) and np.all(np.isfinite(dm2))):
        raise ValueError("|Ue4| and dm2 must be finite")
    if np.any((ue4 < 0) | (ue4 > 1)):
        raise ValueError("|Ue4| must lie in [0, 1]")
    if np.any(dm2 < 0):
        raise ValueError("dm2 must be >= 0 eV^2")
    return ue4, dm2



def survival_probability(ue4, dm2, L, E):
    """Point-evaluated P(nue -> nue); NumPy broadcasting; L in m, E in MeV, dm2 in eV^2.

    Use :func:`averaged_survival_probability` for a bin: point values at bin centres are
    wrong where the oscillation is fast.
    """
    ue4, dm2 = check_params(ue4, dm2)
    L = np.asarray(L, dtype=float)
    E = np.asarray(E, dtype=float)
    if np.any(E <= 0):
        raise ValueError("E must be > 0 MeV")
    if np.any(L < 0):
        raise ValueError("L must be >= 0 m")
    return 1.0 - sin2_2theta(ue4) * np.sin(OSC_K * dm2 * L / E) ** 2


def averaged_survival_probability(ue4, dm2, L_lo, L_hi, E_lo, E_hi, threads=None):
    """Exact average of P(nue -> nue) over the uniform box [L_lo, L_hi] x [E_lo, E_hi].

    All arguments broadcast against each other. A zero-width side is a point in that
    variable. Computed by the C++ kernel (closed forms with the sine integral, or
    Gauss-Legendre quadrature where the phase is slow), accurate to ~1e-12.
    """
    ue4, dm2 = check_params(ue4, dm2)
    arrs = np.broadcast_arrays(ue4, dm2, *(np.asarray(a, dtype=float) for a in (L_lo, L_hi, E_lo, E_hi)))
    shape = arrs[0].shape
    flat = [np.ascontiguousarray(a, dtype=float).ravel() for a in arrs]
    m = _core.box_mean_sin2_elementwise(flat[1], flat[2], flat[3], flat[4], flat[5], threads)
    return (1.0 - sin2_2theta(flat[0]) * m).reshape(shape)


def _read_int(path, key=None):
    """An integer from a /proc or /sys file (the value after `key` in a "key: value kB" table),
    or None."""
    try:
        with open(path) as f:
            for line in f:
                if key is None:
                    return int(line.split()[0])
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, as far as the system says: available RAM and swap
    (/proc/meminfo), the container's limit (cgroup v2 memory.max - memory.current) and the
    address-space limit (``ulimit -v``), whichever is least; None when none is known."""
    limits = []
    avail = _read_int("/proc/meminfo", "MemAvailable:")
    if avail is not None:
        limits.append(avail + (_read_int("/proc/meminfo", "SwapFree:") or 0))
    cg_max, cg_cur = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cg_max is not None and cg_cur is not None:
        limits.append(cg_max - cg_cur)
    if resource is not None:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft - (_read_int(f"/proc/{os.getpid()}/status", "VmSize:") or 0))
    return max(0, min(limits)) if limits else None


@dataclass(frozen=True)
class Grid:
    """A log-spaced (|Ue4|, dm2) grid. Points are ordered with |Ue4| fastest:
    point index p = i_dm2 * n_ue4 + i_ue4 (rows of a map are dm2 values)."""

    ue4_range: tuple = UE4_RANGE
    dm2_range: tuple = DM2_RANGE
    shape: tuple = (101, 101)  # (n_ue4, n_dm2)

    def __post_init__(self):
        (u0, u1), (d0, d1) = self.ue4_range, self.dm2_range
        if (len(self.shape) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                             for v in self.shape) or min(self.shape) < 2):
            raise ValueError(f"grid shape must be two integers >= 2, got {self.shape}")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        object.__setattr__(self, "ue4_range", (float(u0), float(u1)))
        object.__setattr__(self, "dm2_range", (float(d0), float(d1)))
        if not (0 < u0 < u1 <= 1.0):
            raise ValueError(f"|Ue4| range must satisfy 0 < lo < hi <= 1, got {self.ue4_range}")
        if not (0 < d0 < d1):
            raise ValueError(f"dm2 range must satisfy 0 < lo < hi, got {self.dm2_range}")

    @classmethod
    def paper(cls) -> "Grid":
        """The 101 x 101 grid of the FCMLC paper: |Ue4| in [1e-3, 1/sqrt(2)], dm2 in [0.01, 10] eV^2."""
        return cls()

    @classmethod
    def square(cls, n: int) -> "Grid":
        """An n x n grid over the paper's ranges."""
        return cls(shape=(n, n))

    @property
    def n_ue4(self) -> int:
        return self.shape[0]

    @property
    def n_dm2(self) -> int:
        return self.shape[1]

    @property
    def n_points(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def ue4(self) -> np.ndarray:
        return np.geomspace(*self.ue4_range, self.n_ue4)

    @property
    def dm2(self) -> np.ndarray:
        return np.geomspace(*self.dm2_range, self.n_dm2)

    @property
    def sin2_2theta(self) -> np.ndarray:
        return sin2_2theta(self.ue4)

    def points(self) -> np.ndarray:
        """(n_points, 2) array of (|Ue4|, dm2), |Ue4| fastest."""
        u, d = np.meshgrid(self.ue4, self.dm2, indexing="xy")
        return np.column_stack([u.ravel(), d.ravel()])

    def index(self, i_ue4, i_dm2):
        return np.asarray(i_dm2) * self.n_ue4 + np.asarray(i_ue4)

    def unravel(self, p):
        """Point index -> (i_ue4, i_dm2)."""
        p = np.asarray(p)
        return p % self.n_ue4, p // self.n_ue4

    def nearest(self, ue4, dm2):
        """Index of the grid point nearest in (log10 |Ue4|, log10 dm2)."""
        iu = np.abs(np.log10(self.ue4) - np.log10(ue4)).argmin()
        idm = np.abs(np.log10(self.dm2) - np.log10(dm2)).argmin()
        return int(self.index(iu, idm))

    def require_memory(self, bytes_per_point: float, what: str = "this grid") -> None:
        """Refuse (OutOfMemoryError, a MemoryError) a computation on this grid that needs
        `bytes_per_point` per grid point when that is more than :func:`available_memory`: said
        before the work, with what it would need, instead of failing half-way."""
        need = float(bytes_per_point) * self.n_points
        have = available_memory()
        if have is not None and need > have:
            raise OutOfMemoryError(
                f"{what} on a {self.n_ue4} x {self.n_dm2} grid ({self.n_points:.3g} points) needs about "
                f"{need / 2 ** 30:.3g} GiB of memory ({bytes_per_point:.4g} bytes per point) but {have / 2 ** 30:.3g} "
                "GiB is available: use a smaller grid (--grid)")

    def to_dict(self) -> dict:
        return {"ue4_range": list(self.ue4_range), "dm2_range": list(self.dm2_range), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(d["ue4_range"]), tuple(d["dm2_range"]), tuple(d["shape"]))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def grid_or_paper(grid) -> Grid:
    """``grid`` checked to be a :class:`Grid`, or the paper's 101 x 101 grid for None (the default
    of every function that takes a grid)."""
    grid = Grid.paper() if grid is None else grid
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be an fcmlc.Grid, got {type(grid).__name__}")
    return grid

"""Distance distributions: baseline slices for reactor segments and radioactive-source targets.

A *baseline slice* is a triple (L_lo, L_hi, weight): within it the distance L is taken as
uniformly distributed, and the oscillation is averaged exactly over it by the C++ kernel.

Reactor segments
    The real distance distribution (core volume x segment volume, weighted 1/L^2) is replaced
    by one uniform slice with the same mean and the same RMS (:func:`equal_rms_slice`). For the
    compact cores and short segments of these experiments the distribution is narrow compared to
    the baseline, so its first two moments are what the oscillation average sees; the
    approximation is stated in each model file.

Source experiments
    For a point source at distance L from a target volume element dV, the event rate is
    proportional to dV / L^2. In spherical coordinates around the source dV / L^2 = dL dOmega,
    so the event-weighted distance density is p(L) ~ f(L), the fraction of the sphere of radius
    L (centred on the source) that lies inside the target. :func:`source_distance_slices`
    computes f(L) analytically for a cylinder with the source on its axis (optionally minus a
    sphere centred on the source, as for the outer BEST volume) or a sphere centred on the
    source, and integrates it over slices with Gauss-Legendre quadrature. Slice edges include
    every kink of f(L), so the quadrature is accurate to rounding. It is deterministic: no
    random numbers.
"""
from __future__ import annotations

import math

import numpy as np


def equal_rms_slice(centre: float, *sigmas: float) -> tuple[float, float]:
    """Uniform slice [centre - sqrt(3) s, centre + sqrt(3) s] with s^2 = sum(sigmas^2).

    A uniform distribution of full width w has RMS w / sqrt(12); independent contributions
    (core extent along the line of sight, segment length, spread of segment centres inside a
    baseline bin) add in quadrature.
    """
    s = math.sqrt(sum(float(x) ** 2 for x in sigmas))
    h = math.sqrt(3.0) * s
    return (float(centre) - h, float(centre) + h)


def sigma_uniform(width: float) -> float:
    """RMS of a uniform distribution of the given full width: width / sqrt(12)."""
    return float(width) / math.sqrt(12.0)


def sigma_disk_projection(radius: float) -> float:
    """RMS of the projection of a uniform disk of the given radius onto a line through its
    centre (a cylindrical core seen side-on): radius / 2."""
    return float(radius) / 2.0


def _allowed_cos_measure(L: np.ndarray, radius: float, height: float, h: float) -> np.ndarray:
    """Measure (in cos theta, out of 2) of directions at distance L from a source on the axis of
    the cylinder {r < radius, 0 < z < height}, source at z = h, that end inside the cylinder."""
    L = np.asarray(L, dtype=float)
    Ls = np.where(L > 0, L, 1.0)
    a = np.where(L > 0, np.maximum(-1.0, -h / Ls), -1.0)
    b = np.where(L > 0, np.minimum(1.0, (height - h) / Ls), 1.0)
    full = np.clip(b - a, 0.0, None)
    c = np.sqrt(np.clip(1.0 - (radius / Ls) ** 2, 0.0, None))
    # directions with |u| >= c reach the end caps' region inside radius
    upper = np.clip(b - np.maximum(a, c), 0.0, None)
    lower = np.clip(np.minimum(b, -c) - a, 0.0, None)
    return np.where(L <= radius, full, upper + lower)


def solid_angle_fraction(L, shape: str, **geo) -> np.ndarray:
    """f(L): fraction of the sphere of radius L around the source that lies inside the target."""
    L = np.asarray(L, dtype=float)
    if shape == "sphere":
        f = (L < geo["radius"]).astype(float)
    elif shape == "cylinder":
        f = 0.5 * _allowed_cos_measure(L, geo["radius"], geo["height"], geo["source_height"])
    else:
        raise ValueError(f"unknown target shape {shape!r}")
    excl = float(geo.get("exclude_sphere_radius", 0.0) or 0.0)
    if excl > 0:
        f = np.where(L < excl, 0.0, f)
    return f


def max_distance(shape: str, **geo) -> float:
    if shape == "sphere":
        return float(geo["radius"])
    h, H, R = geo["source_height"], geo["height"], geo["radius"]
    return math.hypot(R, max(h, H - h))


def _kinks(shape: str, **geo) -> list[float]:
    k = [0.0, max_distance(shape, **geo)]
    excl = float(geo.get("exclude_sphere_radius", 0.0) or 0.0)
    if excl > 0:
        k.append(excl)
    if shape == "cylinder":
        R, H, h = geo["radius"], geo["height"], geo["source_height"]
        k += [R, h, H - h, math.hypot(R, h), math.hypot(R, H - h)]
    return sorted(set(x for x in k if x >= 0))


def source_distance_slices(shape: str, n_slices: int = 200, n_nodes: int = 16, **geo) -> np.ndarray:
    """Event-weighted distance distribution of a point source in a target, as slices.

    Returns an array (n, 3) of (L_lo, L_hi, weight) with weights summing to one; slices with
    zero weight are dropped. `geo`: for shape "cylinder": radius, height, source_height (source on
    the axis, height above the bottom), optional exclude_sphere_radius; for "sphere": radius
    (source at the centre). Lengths in metres.
    """
    Lmax = max_distance(shape, **geo)
    edges = np.union1d(np.linspace(0.0, Lmax, int(n_slices) + 1), np.array(_kinks(shape, **geo)))
    edges = edges[(edges >= 0) & (edges <= Lmax)]
    # drop near-duplicate edges (kinks within rounding of a grid edge)
    keep = np.concatenate([[True], np.diff(edges) > 1e-12 * max(Lmax, 1.0)])
    edges = edges[keep]
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    x, w = 0.5 * (x + 1.0), 0.5 * w
    lo, hi = edges[:-1], edges[1:]
    nodes = lo[:, None] + (hi - lo)[:, None] * x[None, :]
    weight = (hi - lo) * (solid_angle_fraction(nodes, shape, **geo) * w[None, :]).sum(axis=1)
    good = weight > 0
    out = np.column_stack([lo[good], hi[good], weight[good]])
    total = out[:, 2].sum()
    if not total > 0:
        raise ValueError("the target volume seen from the source is empty")
    out[:, 2] /= total
    return out


def reactor_distance_moments(distance: float, core_radius: float, core_height: float, core_axis: str,
                             detector_size: tuple[float, float, float], n: int = 10) -> tuple[float, float]:
    """Mean and RMS of the event-weighted (1/L^2) distance between a uniform cylindrical core
    and a uniform box detector, by deterministic Gauss-Legendre quadrature.

    `distance`: core centre to detector centre (m). The line of sight is the x axis.
    `core_axis`: "across" (cylinder axis perpendicular to the line of sight: detector beside
    the core) or "along" (axis along the line of sight: detector below the core, as DANSS).
    `detector_size`: (extent along the line of sight, two transverse extents), metres.
    """
    if core_axis not in ("across", "along"):
        raise ValueError("core_axis must be 'across' or 'along'")
    x, w = np.polynomial.legendre.leggauss(n)
    x, w = 0.5 * (x + 1.0), 0.5 * w
    # core: r (weight r), phi (uniform trapezoid, exact for periodic integrands), z
    r = core_radius * np.sqrt(x)  # sqrt map: uniform in area with weights w
    phi = 2.0 * np.pi * (np.arange(2 * n) + 0.5) / (2 * n)
    z = core_height * (x - 0.5)
    R, P, Z = np.meshgrid(r, phi, z, indexing="ij")
    Wc = (w[:, None, None] * np.full(phi.size, 1.0 / phi.size)[None, :, None] * w[None, None, :])
    if core_axis == "across":  # axis = z (vertical), line of sight = x
        cx, cy, cz = R * np.cos(P), R * np.sin(P), Z
    else:  # axis along x
        cx, cy, cz = Z, R * np.cos(P), R * np.sin(P)
    core = np.stack([cx.ravel(), cy.ravel(), cz.ravel()], axis=1)
    wc = Wc.ravel()
    a, b, c = detector_size
    dx, dy, dz = np.meshgrid(distance + a * (x - 0.5), b * (x - 0.5), c * (x - 0.5), indexing="ij")
    det = np.stack([dx.ravel(), dy.ravel(), dz.ravel()], axis=1)
    wd = (w[:, None, None] * w[None, :, None] * w[None, None, :]).ravel()
    L = np.sqrt(((det[None, :, :] - core[:, None, :]) ** 2).sum(axis=2))
    wt = wc[:, None] * wd[None, :] / L ** 2
    mean = float((wt * L).sum() / wt.sum())
    rms = float(np.sqrt((wt * (L - mean) ** 2).sum() / wt.sum()))
    return mean, rms

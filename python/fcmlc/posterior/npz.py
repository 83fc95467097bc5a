"""The NPZ file of a :class:`~fcmlc.posterior.Posterior`: arrays plus a JSON header, no pickle.

    ue4, dm2       cell centres
    mass, density  normalised cell masses and the density (n_dm2, n_ue4)
    header         JSON: {"format": "fcmlc.Posterior", "version": 1, "meta": {...}}
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._io import atomic_path, npz_header

__all__ = ["NPZ_FORMAT", "NPZ_VERSION", "write_posterior_npz", "read_posterior_npz"]

NPZ_FORMAT = "fcmlc.Posterior"
NPZ_VERSION = 1


def write_posterior_npz(post, path) -> Path:
    """Write ue4, dm2, the cell masses, the density and JSON metadata of ``post`` to ``path``
    (compressed, all or nothing; '.npz' is appended when missing, as np.savez_compressed does).
    Returns the path written."""
    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    header = {"format": NPZ_FORMAT, "version": NPZ_VERSION, "meta": post.meta}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, ue4=post.ue4, dm2=post.dm2, mass=post.mass, density=post.density,
                            header=np.array(json.dumps(header)))
    return path


def read_posterior_npz(path) -> dict:
    """The arrays and metadata of a file written by :func:`write_posterior_npz`: a dict with
    ue4, dm2, mass (exactly as written) and meta; a ValueError for other files."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"ue4", "dm2", "mass", "header"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: not an fcmlc posterior file (missing {sorted(missing)})")
        header = npz_header(f, path, NPZ_FORMAT, NPZ_VERSION)
        return {"ue4": f["ue4"], "dm2": f["dm2"], "mass": f["mass"], "meta": header.get("meta")}

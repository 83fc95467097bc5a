"""The summary of one FCMLC fit (the ``summary.json`` that `fcmlc fit` writes)."""
from __future__ import annotations

__all__ = ["SUMMARY_LEVELS", "fit_summary"]

#: Credibility levels summarised for a fit (68, 90, 95 %).
SUMMARY_LEVELS = (0.68, 0.90, 0.95)


def fit_summary(post, model, meta: dict, levels=SUMMARY_LEVELS) -> dict:
    """JSON-able summary of the posterior ``post`` of a trained FCMLC ``model``: ``meta`` (how the
    data vector and the fit were made), the best point, region sizes at ``levels``, the exclusion of
    the no-oscillation edge, grid-edge warnings, the full :meth:`Posterior.summary` and the model."""
    ps = post.summary(levels=levels)
    out = dict(meta)
    out["best_point"] = ps["best_point"]
    out["regions"] = [{"level": lv, "cells": ps["levels"][f"{lv:g}"]["n_cells"],
                       "fraction": ps["levels"][f"{lv:g}"]["area_fraction"],
                       "mass": ps["levels"][f"{lv:g}"]["mass"],
                       "excludes_null": ps["levels"][f"{lv:g}"]["excludes_null"]} for lv in levels]
    out["excludes_null"] = {f"{lv:.2f}": bool(ps["levels"][f"{lv:g}"]["excludes_null"]) for lv in levels}
    out["edge_warnings"] = ps["edge_warnings"]
    out["posterior_summary"] = ps
    out["model"] = {"directory": model.info.get("directory"), "experiments": model.experiments,
                    "fcmlc_version": model.version}
    return out

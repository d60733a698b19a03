"""A fitted design grown or cut along one variable (simr's ``extend``), for power curves.

Two kinds of ``along``:

- **A grouping factor** (``"Subject"``): ``size`` levels. Fewer than the fit's
  keep the rows of the first ``size`` levels (in the order of the level
  codes). More add new levels: new level ``k`` (``k ≥ J``) copies the rows of
  level ``k mod J`` (their covariates, Z and weights) under a new label, as
  simr's ``extend(fit, along = "Subject", n = size)`` does. A factor nested
  in it (its grouping columns include ``along``'s, e.g. ``cask:batch``
  within ``batch``) gets new levels with the copies too; other factors keep
  the copied rows' levels.
- **A fixed-effect column** (``"Days"``): ``size`` distinct values of that
  column kept, the smallest ones (rows with other values dropped): simr's
  ``powerCurve(fit, along = "Days")`` over a within-group covariate.

Level codes are renumbered afterwards (levels left without rows dropped), so
the result is a design of its own, ready for ``model_data``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Int

from ..design._design import Design, ModelArrays

__all__ = ["ExtendedDesign", "along_kind", "extend_design"]


@dataclasses.dataclass(frozen=True)
class ExtendedDesign:
    """The grown or cut model: ``arrays`` (its rows) and ``n_levels`` (per factor)."""

    arrays: ModelArrays
    n_levels: tuple[int, ...]


def along_kind(design: Design, along: str) -> str:
    """``"factor"`` or ``"column"``: what ``along`` names in ``design`` (ValueError: neither)."""
    if any(along in (f.name, ":".join(f.columns)) or f.columns == (along,) for f in design.factors):
        return "factor"
    if along in design.fixed_names:
        return "column"
    factors = [f.name for f in design.factors]
    raise ValueError(
        f"along={along!r} is neither a grouping factor ({factors}) nor a fixed-effect column "
        f"({list(design.fixed_names)})"
    )


def extend_design(design: Design, arrays: ModelArrays, along: str, size: int) -> ExtendedDesign:
    """The model's rows with ``size`` levels of factor ``along``, or ``size`` distinct
    values of fixed-effect column ``along`` (see the module docstring)."""
    if along_kind(design, along) == "factor":
        rows, shifts = _factor_rows(design, arrays, along, size)
    else:
        rows, shifts = _column_rows(design, arrays, along, size)
    out = _take(arrays, rows, shifts)
    rank = np.linalg.matrix_rank(out.arrays.X)
    if rank < arrays.X.shape[1]:
        raise ValueError(
            f"along={along!r} at size {size}: the fixed effects have rank {rank} for "
            f"{arrays.X.shape[1]} columns there (a column is constant or aliased): choose larger sizes"
        )
    return out


def _factor_index(design: Design, along: str) -> int:
    for k, f in enumerate(design.factors):
        if along in (f.name, ":".join(f.columns)) or f.columns == (along,):
            return k
    raise ValueError(f"{along!r} is not a grouping factor")  # along_kind checked it


def _factor_rows(
    design: Design, arrays: ModelArrays, along: str, size: int
) -> tuple[Int[np.ndarray, " m"], Int[np.ndarray, "m F"]]:
    """Rows (m,) of the original kept, in order, and per row and factor (m, F) the
    number of the copy it belongs to (0: the original) when that factor is ``along``
    or nested in it, else 0."""
    target = _factor_index(design, along)
    codes = arrays.codes[target]
    n_levels = design.factors[target].n_levels
    new_levels = np.arange(size)
    source = new_levels % n_levels  # level k copies level k mod J
    copy = new_levels // n_levels
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(n_levels + 1))
    rows = [order[starts[s] : starts[s + 1]] for s in source]
    copies = [np.full(len(r), c) for r, c in zip(rows, copy, strict=True)]
    nested = np.asarray([set(design.factors[target].columns) <= set(f.columns) for f in design.factors])
    copy_of_row = np.concatenate(copies)
    shifts = copy_of_row[:, None] * nested[None, :]
    return np.concatenate(rows), shifts


def _column_rows(
    design: Design, arrays: ModelArrays, along: str, size: int
) -> tuple[Int[np.ndarray, " m"], Int[np.ndarray, "m F"]]:
    """The rows whose value of column ``along`` is among its ``size`` smallest distinct values."""
    values = arrays.X[:, design.fixed_names.index(along)]
    distinct = np.unique(values)
    if size > len(distinct):
        raise ValueError(
            f"along={along!r} has {len(distinct)} distinct values: a size of {size} cannot be kept"
        )
    rows = np.flatnonzero(values <= distinct[size - 1])
    return rows, np.zeros((len(rows), len(design.factors)), int)


def _take(arrays: ModelArrays, rows: np.ndarray, shifts: np.ndarray) -> ExtendedDesign:
    """The rows ``rows`` of ``arrays``; factor f's code of row i is made distinct per
    copy (``code + shift·J_f``) and all codes renumbered in order of first use."""
    codes, n_levels = [], []
    for f, c in enumerate(arrays.codes):
        raw = c[rows].astype(np.int64) + shifts[:, f] * (int(c.max()) + 1)
        levels, first = np.unique(raw, return_index=True)
        order = np.argsort(first, kind="stable")  # levels in order of first appearance
        renumber = np.empty(len(levels), np.int32)
        renumber[order] = np.arange(len(levels), dtype=np.int32)
        codes.append(renumber[np.searchsorted(levels, raw)])
        n_levels.append(len(levels))
    weights = None if arrays.weights is None else arrays.weights[rows]
    new = ModelArrays(
        y=arrays.y[rows],
        X=arrays.X[rows],
        codes=tuple(codes),
        Z=tuple(z[rows] for z in arrays.Z),
        weights=weights,
        offset=None if arrays.offset is None else arrays.offset[rows],
    )
    return ExtendedDesign(arrays=new, n_levels=tuple(n_levels))

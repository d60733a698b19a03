"""Padding: data sets of similar size made the same size, changing no result.

Compiled code is specific to the shapes of its arrays. Padding rows (zero X,
Z and response, weight 1), levels (no rows: identity blocks in the factor),
cross entries (no rows: value 0) and cross pairs (products of a padded entry,
sorted last) adds nothing to any statistic, so a data set padded to a few
sizes (:func:`bucket`) shares its compiled fit with every data set of the
same structure and similar size (``fit_reml``), and data sets of one model
pad to common sizes and stack (:func:`stack_data`, ``fit_reml_stacked``).
The real row count enters the fit as ``n_obs`` (the residual degrees of
freedom); the conditional modes of padded levels are 0 and are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._fit import FitResult
from ._index import DenseIndex, DesignIndex
from ._statistics import ModelData

__all__ = [
    "DENSE_BITS",
    "LINEAR_BITS",
    "bucket",
    "drop_padded_levels",
    "pad_data",
    "pad_to_buckets",
    "padded_levels",
    "stack_data",
]



def _pad_axis(a, size: int, axis: int = 0, value: float = 0) -> np.ndarray:
    a = np.asarray(a)
    extra = size - a.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad an axis of {a.shape[axis]} down to {size}")
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths, constant_values=value)


def _pad_index(index: DesignIndex, n_rows: int, n_levels: int, n_entries: int, n_pairs: int) -> DesignIndex:
    """The same structure with padded rows, levels of factor 1, cross entries and pairs.

    A padded row points at level 0 and entry 0 with zero values; a padded
    entry has no rows (its value is 0); a padded pair multiplies two padded
    entries and is placed last in both sort orders (target Q₂² − 1, the last
    level), so the sorted segment sums stay sorted.
    """
    j_real = index.n_levels
    if n_levels < j_real:
        raise ValueError(f"cannot pad {j_real} levels down to {n_levels}")
    codes = _pad_axis(index.codes, n_rows).astype(index.codes.dtype, copy=False)
    dense = None
    if index.dense is not None:
        dense = _pad_dense(index.dense, index.layout.size, n_rows, n_levels, n_entries, n_pairs)
    return DesignIndex(codes, dense, n_levels=n_levels, layout=index.layout)


def _pad_dense(dense: DenseIndex, q2: int, n_rows: int, n_levels: int, n_entries: int, n_pairs: int) -> DenseIndex:
    """The dense part of :func:`_pad_index`."""
    e_real = dense.n_entries
    if n_pairs > dense.n_pairs and n_entries <= e_real:
        raise ValueError("padding the cross pairs needs at least one padded cross entry")
    pad_entry = e_real  # the first padded entry: no row adds to it, its value is 0
    last_target, last_level = q2 * q2 - 1, n_levels - 1
    sizes_and_fill = {
        "dense_cols": (n_rows, 0),
        "entry": (n_rows, 0),
        "cross_level": (n_entries, n_levels - 1),
        "cross_column": (n_entries, q2 - 1),
        "pair_first": (n_pairs, pad_entry),
        "pair_second": (n_pairs, pad_entry),
        "pair_target": (n_pairs, last_target),
        "pair_level": (n_pairs, last_level),
        "first_by_level": (n_pairs, pad_entry),
        "second_by_level": (n_pairs, pad_entry),
        "target_by_level": (n_pairs, last_target),
        "level_by_level": (n_pairs, last_level),
    }
    padded = {}
    for name, (size, fill) in sizes_and_fill.items():
        old = getattr(dense, name)
        padded[name] = _pad_axis(old, size, value=fill).astype(old.dtype, copy=False)
    return DenseIndex(**padded)


def _index_sizes(index: DesignIndex) -> tuple[int, int]:
    """(E, P) of the index: 0, 0 with one grouping factor."""
    if index.dense is None:
        return 0, 0
    return index.dense.n_entries, index.dense.n_pairs


def pad_data(
    data: ModelData,
    n_rows: int,
    *,
    n_levels: int | None = None,
    n_entries: int | None = None,
    n_pairs: int | None = None,
) -> ModelData:
    """``data`` padded to ``n_rows`` rows (and, optionally, more levels of factor 1,
    cross entries and pairs), changing no statistic.

    Padded rows have X = 0, Z = 0 and weight 1: pass the real row count as
    ``n_obs`` to ``design_statistics`` (or ``fit_data``), and pad the response
    and any offset with zeros. Padded levels have no rows and give conditional
    modes of 0 (drop them from the result). Host side: the result holds numpy
    arrays (a compiled function places them on its device itself).
    """
    e, p = _index_sizes(data.index)
    index = _pad_index(
        data.index,
        n_rows,
        data.index.n_levels if n_levels is None else n_levels,
        e if n_entries is None else n_entries,
        p if n_pairs is None else n_pairs,
    )
    return ModelData(
        X=_pad_axis(data.X, n_rows),
        Z=tuple(_pad_axis(z, n_rows) for z in data.Z),
        weights=_pad_axis(data.weights, n_rows, value=1.0),
        index=index,
        structures=data.structures,
    )


def stack_data(datas: Sequence[ModelData]) -> ModelData:
    """K data sets of one structure padded to common sizes and stacked (leading axis K).

    The data sets must share the structure (the same columns of X and Z, the
    same factors and covariance structures); their rows, levels and cross
    pairs may differ. Padded dense levels of the later factors are not
    supported: those factors must have the same numbers of levels.
    """
    first = datas[0]
    for k, d in enumerate(datas):
        if d.structures != first.structures or d.X.shape[1] != first.X.shape[1]:
            raise ValueError(
                f"data set {k} has a different structure (fixed-effect columns or random-effects "
                "terms) from data set 0: stacked data sets need the same model"
            )
        if d.index.layout != first.index.layout:
            raise ValueError(
                f"data set {k}: the grouping factors after the first have different numbers of "
                f"levels ({d.index.layout.blocks} vs {first.index.layout.blocks}); stacked data "
                "sets need the same"
            )
    n_rows = max(d.X.shape[0] for d in datas)
    n_levels = max(d.index.n_levels for d in datas)
    sizes = [_index_sizes(d.index) for d in datas]
    n_entries = max(e for e, _ in sizes) + (1 if datas[0].index.dense is not None else 0)
    n_pairs = max(p for _, p in sizes)
    padded = [pad_data(d, n_rows, n_levels=n_levels, n_entries=n_entries, n_pairs=n_pairs) for d in datas]
    return jax.tree.map(lambda *a: jnp.stack(a), *padded)


def bucket(n: int, bits: int = 4) -> int:
    """``n`` rounded up to ``bits`` significant bits (default 4: at most 1/8 more):
    data sets of similar size get the same padded size and so share compiled code."""
    shift = max(0, int(n).bit_length() - bits)
    return -(-int(n) >> shift) << shift


# Sizes whose cost is linear (rows, levels of factor 1, cross entries and pairs)
# are padded to 3 significant bits (at most 1/4 more: sleepstudy's 170 and 180
# rows share 192); the dense levels of the later factors to 5 (at most 1/16
# more), since the dense block costs Q₂³ per evaluation.
LINEAR_BITS = 3
DENSE_BITS = 5

# Small data sets: below these sizes padding costs nothing measurable (a fit's iteration
# is dominated by fixed costs there), so every data set up to them shares one program per
# model structure: the rows, the first factor's levels, and the cross entries and pairs.
# The later factors' levels are not raised: the dense block costs Q₂³ per evaluation.
MIN_ROWS = 1024
MIN_LEVELS = 64
MIN_CROSS = 1024


def padded_levels(n_levels: Sequence[int]) -> list[int]:
    """Each factor's number of levels padded to its bucket (see ``LINEAR_BITS``), the
    first factor's to at least ``MIN_LEVELS``."""
    return [max(MIN_LEVELS, bucket(j, LINEAR_BITS)) if f == 0 else bucket(j, DENSE_BITS) for f, j in enumerate(n_levels)]


def pad_to_buckets(data: ModelData, multiple: int = 1) -> ModelData:
    """``data`` with its rows, cross entries and pairs padded to their buckets
    (rows also to a multiple of ``multiple``, the devices they are split over).

    Build ``data`` with :func:`padded_levels` levels to pad the levels too; the
    padded fit equals the unpadded one (pass the real row count as ``n_obs``
    and drop the padded levels with :func:`drop_padded_levels`).
    """
    n = data.X.shape[0]
    rows = -(-max(MIN_ROWS, bucket(n, LINEAR_BITS)) // multiple) * multiple
    entries, pairs = _index_sizes(data.index)
    if data.index.dense is None:
        return pad_data(data, rows)
    # one padded entry at least: padded pairs point at it
    n_entries = max(MIN_CROSS, bucket(entries + 1, LINEAR_BITS))
    return pad_data(data, rows, n_entries=n_entries, n_pairs=max(MIN_CROSS, bucket(pairs, LINEAR_BITS)))


def drop_padded_levels(result: FitResult, n_levels: Sequence[int]) -> FitResult:
    """``result`` (host arrays) with the conditional modes of the real levels only."""
    b = tuple(bf[:j] for bf, j in zip(result.b, n_levels, strict=True))
    b_cov = tuple(c[:j] for c, j in zip(result.b_cov, n_levels, strict=True))
    return dataclasses.replace(result, b=b, b_cov=b_cov)

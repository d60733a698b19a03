"""Many data sets of one model, fitted as one computation (``fit_reml_stacked``)."""


from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import pandas as pd
from jax.sharding import Mesh
from jaxtyping import Float, Int, Shaped

from ..core import FitOptions
from ..core._fit import FitResult
from ..core._many import (
    jit_fit_stacked,
    per_fit_bytes,
    run_chunks,
    stack_data,
)
from ..core._progress import Progress
from ..core._sharding import n_devices, shard_batch, to_host
from ..design._design import Design, ModelArrays, build_design, design_from_arrays
from ..design._prepare import prepare
from ._inputs import Inputs
from ._table import FitTable, TableSource, checked_batch_size, fit_table, warn_unconverged_fits

__all__ = ["fit_reml_stacked"]


# ------------------------------------------------------------------ stacked data sets


def fit_reml_stacked(
    formula: str | None = None,
    datasets: Sequence[pd.DataFrame] | None = None,
    *,
    reml: bool = True,
    y: Float[npt.ArrayLike, "K n"] | None = None,
    X: Float[npt.ArrayLike, "K n p"] | None = None,
    Z: Float[npt.ArrayLike, "K n q"] | None = None,
    groups: Shaped[npt.ArrayLike, "K n"] | None = None,
    batch_size: int | None = None,
    devices: int | Sequence[Any] | Mesh | None = None,  # Any: jax.Device, not a static type
    verbose: bool = True,
    max_iter: int = 500,
    dtype: jax.typing.DTypeLike = jnp.float64,
    options: FitOptions | None = None,
) -> FitTable:
    """Fits one model to each of K data sets of the same model, in one computation.

    A simulation study's data sets: the same formula (the same fixed-effect
    columns and random-effects terms), with their own rows, covariates and
    grouping. Each design is built and checked on the host, padded to common
    sizes (padding changes no result) and stacked; chunks of ``batch_size``
    data sets are fitted as one vmapped computation.

    Args:
        formula: an lme4 formula, the same for every data set.
        datasets: a sequence of K DataFrames.
        reml: REML (default) or maximum likelihood.
        y: array input instead of a formula: the responses (K, n).
        X: with ``y``: the fixed effects' columns (K, n, p) (default an intercept).
        Z: with ``y``: the random effects' columns (K, n, q) (default a random
            intercept).
        groups: with ``y``: the level labels (K, n).
        batch_size: data sets per vmapped chunk (as in :func:`fit_reml_many`).
        devices: split the data sets over devices (as in :func:`fit_reml_many`).
        verbose: the progress bar.
        max_iter: as in :func:`fit_reml`.
        dtype: as in :func:`fit_reml`.
        options: as in :func:`fit_reml`.

    Returns:
        A :class:`FitTable`, one row per data set (index 0 … K−1).
    """
    inputs = Inputs.from_arguments(
        "fit_reml_stacked",
        formula=formula,
        data=datasets,
        y=y,
        X=X,
        Z=Z,
        groups=groups,
        reml=reml,
        max_iter=max_iter,
        options=options,
        dtype=dtype,
        devices=devices,
    )
    pairs = _stacked_designs(inputs)
    _check_same_model(pairs)
    fits = _fit_stacked(inputs, pairs, batch_size, verbose)
    source = TableSource(lambda k: pairs[k], fits, inputs.options)
    warn_unconverged_fits(fits, {})
    return fit_table(pairs[0][0], fits, pd.RangeIndex(len(pairs), name="dataset"), {}, source)


def _stacked_designs(inputs: Inputs) -> list[tuple[Design, ModelArrays]]:
    """Each data set's design and arrays, built and checked on the host."""
    if inputs.formula is not None:
        formula: str = inputs.formula  # declared: lambdas in a comprehension lose narrowing
        datasets = inputs.data
        if isinstance(datasets, pd.DataFrame) or len(datasets) == 0:
            raise ValueError("fit_reml_stacked(formula, datasets) needs a non-empty list of DataFrames")
        return [
            _numbered(k, lambda df=df: build_design(formula, df, missing=inputs.missing))
            for k, df in enumerate(datasets)
        ]
    if inputs.y is None or inputs.groups is None:
        raise ValueError("pass a formula and datasets, or arrays y (K, n) and groups (K, n)")
    y = np.asarray(inputs.y, float)
    if y.ndim != 2:
        raise ValueError(f"y must be (K, n) for stacked data sets, got shape {y.shape}")

    def pick(a: npt.ArrayLike | None, k: int) -> np.ndarray | None:
        return None if a is None else np.asarray(a)[k]

    return [
        _numbered(
            k,
            lambda k=k: design_from_arrays(
                y[k], pick(inputs.X, k), pick(inputs.Z, k), pick(inputs.groups, k), missing=inputs.missing
            ),
        )
        for k in range(len(y))
    ]


def _numbered(k: int, build: Callable[[], tuple[Design, ModelArrays]]) -> tuple[Design, ModelArrays]:
    """``build()``, its ValueError prefixed with the data set's number."""
    try:
        return build()
    except ValueError as err:
        raise ValueError(f"data set {k}: {err}") from err


def _check_same_model(pairs: list[tuple[Design, ModelArrays]]) -> None:
    """Every data set gives data set 0's fixed effects and random-effects structure."""
    first = pairs[0][0]
    for k, (d, _) in enumerate(pairs):
        if d.fixed_names != first.fixed_names or d.structures != first.structures:
            raise ValueError(
                f"data set {k} gives fixed effects {list(d.fixed_names)} and random-effects structure "
                f"{[s.q for s in d.structures]}, data set 0 {list(first.fixed_names)} and "
                f"{[s.q for s in first.structures]}: stacked data sets must give the same model"
            )


def _fit_stacked(
    inputs: Inputs, pairs: list[tuple[Design, ModelArrays]], batch_size: int | None, verbose: bool
) -> FitResult:
    """The vmapped fits (leading axis K) of the K data sets, padded to common
    sizes and stacked, in chunks of ``batch_size`` (host loop)."""
    mesh = inputs.mesh
    with jax.enable_x64(True):
        stacked = stack_data([prepare(d, a, dtype=inputs.dtype) for d, a in pairs])
        size = stacked.X.shape[1]
        ys = np.stack([np.pad(a.y, (0, size - len(a.y))) for _, a in pairs]).astype(inputs.dtype)
        n_obs = np.asarray([len(a.y) for _, a in pairs], inputs.dtype)
        per_fit = per_fit_bytes(jax.tree.map(lambda a: a[0], stacked)) + 8 * stacked.X[0].size
        batch_size = checked_batch_size(batch_size, len(pairs), per_fit, n_devices(mesh))
        host = jax.tree.map(np.asarray, stacked)

        def run(ids: Int[np.ndarray, " batch"]) -> FitResult:
            chunk = shard_batch((jax.tree.map(lambda a: a[ids], host), ys[ids], n_obs[ids]), mesh)
            return to_host(jit_fit_stacked(*chunk, inputs.options))

        progress = Progress(len(pairs), "fit", verbose and len(pairs) > batch_size)
        return run_chunks(len(pairs), batch_size, run, progress=progress)

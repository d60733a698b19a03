"""``fit_reml_many``: one model per response, every response over one design, as one computation.

Every response shares the formula's design (genes over samples, outcomes over
one study). The design's statistics are built once; each chunk of responses
is one vmapped fit (``core._many.fit_responses``). Like ``fit_reml_stacked``
(``_stacked``), it returns a :class:`~jaxmixed.linear._table.FitTable`: a
tidy DataFrame with one row per fit whose ``result(k)`` gives fit k as a full
:class:`MixedModelResults`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import pandas as pd
from jax.sharding import Mesh
from jaxtyping import Bool, Float, Int, Shaped

from ..core import FitOptions
from ..core._fit import FitResult, jit_design_statistics
from ..core._many import (
    jit_fit_responses,
    jit_fit_responses_screened,
    pad_data,
    per_fit_bytes,
    refit_batch_size,
    run_chunks,
)
from ..core._progress import Progress
from ..core._sharding import n_devices, shard_batch, shard_rows, to_host
from ..core._statistics import DesignStatistics
from ..core._status import RESULTS
from ..design._design import Design, ModelArrays, build_design, design_from_arrays
from ..design._prepare import prepare
from ._inputs import Inputs
from ._table import FitTable, TableSource, checked_batch_size, fit_table, warn_unconverged_fits

__all__ = ["FitTable", "fit_reml_many"]

_PLACEHOLDER = "__jaxmixed_response__"


# ------------------------------------------------------------------ many responses


def _placeholder_formula(formula: str) -> str:
    """The formula with its response replaced by a placeholder column (the
    design does not depend on the response)."""
    if "~" not in formula:
        raise ValueError(f"formula {formula!r} has no '~'")
    rhs = formula.split("~", 1)[1]
    return f"{_PLACEHOLDER} ~ {rhs}"


def _response_matrix(
    data: pd.DataFrame | None, responses: Any, y: npt.ArrayLike | None
) -> tuple[Float[np.ndarray, "K n"], pd.Index]:
    """(K, n) responses and their labels, from column names or a matrix."""
    if y is not None:
        if responses is not None:
            raise ValueError("pass the responses either as y= (array input) or as responses=, not both")
        mat = y
    elif responses is None:
        raise ValueError("responses is required: a list of columns of data, or an (n, K) matrix")
    elif isinstance(responses, str):
        raise TypeError(f"responses must be a list of column names, got the string {responses!r}")
    elif isinstance(responses, np.ndarray | pd.DataFrame) or (
        not isinstance(responses, pd.Index | list | tuple) and hasattr(responses, "shape")
    ):
        mat = responses
    else:
        names = list(responses)
        missing = [c for c in names if data is None or c not in data.columns]
        if missing:
            raise ValueError(f"response column(s) {missing[:5]} are not in the data")
        if data is None:  # array input and no response names: no responses
            raise ValueError("responses is required: a list of columns of data, or an (n, K) matrix")
        mat = data[names]
    labels = mat.columns if isinstance(mat, pd.DataFrame) else None
    values = np.asarray(mat, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"the responses must be an (n, K) matrix, got shape {values.shape}")
    if labels is None:
        labels = pd.RangeIndex(values.shape[1])
    return values.T.copy(), pd.Index(labels, name="response")


def _screen(ys: Float[np.ndarray, "K n"]) -> dict[int, str]:
    """Responses that cannot be fitted, with the reason (they are not fitted)."""
    reasons = {}
    for k, bad in enumerate((~np.isfinite(ys)).sum(axis=1)):
        if bad:
            reasons[k] = f"not fitted: the response has {bad} missing or non-finite value(s)"
        elif np.ptp(ys[k]) == 0:  # screened here: its fit would run on round-off and hold up its chunk
            reasons[k] = f"not fitted: {RESULTS[RESULTS.constant_response]}"
    return reasons


def fit_reml_many(
    formula: str | None = None,
    data: pd.DataFrame | None = None,
    responses: Sequence[Hashable] | pd.Index | Float[npt.ArrayLike, "n K"] | None = None,
    *,
    reml: bool = True,
    y: Float[npt.ArrayLike, "n K"] | None = None,
    X: Float[npt.ArrayLike, "n p"] | None = None,
    Z: Float[npt.ArrayLike, "n q"] | None = None,
    groups: Shaped[npt.ArrayLike, " n"] | None = None,
    weights: str | Float[npt.ArrayLike, " n"] | None = None,
    batch_size: int | None = None,
    devices: int | Sequence[Any] | Mesh | None = None,  # Any: jax.Device, not a static type
    verbose: bool = True,
    max_iter: int = 500,
    dtype: jax.typing.DTypeLike = jnp.float64,
    options: FitOptions | None = None,
) -> FitTable:
    """Fits one model per response, every response over the same design, in one computation.

    The formula's right-hand side (or the arrays X, Z, groups) gives the
    design, built and checked once; its left-hand side is ignored. Each
    response then adds only its own statistics, and the fits of a chunk of
    ``batch_size`` responses run as one vmapped computation, compiled once.

    Args:
        formula: as in :func:`fit_reml`; its left-hand side is ignored.
        data: the covariates (complete: a missing covariate is an error) and the
            responses.
        responses: the names of the response columns of ``data``, or an
            (n, K) matrix (array or DataFrame: its column names label the fits).
        reml: REML (default) or ML.
        y: array input: an (n, K) response matrix (the other arrays as in
            :func:`fit_reml`).
        X: array input, as in :func:`fit_reml`.
        Z: array input, as in :func:`fit_reml`.
        groups: array input, as in :func:`fit_reml`.
        weights: prior weights, as in :func:`fit_reml`.
        batch_size: fits per vmapped chunk (default: as many as fit in
            512 MiB, at most 1,024 on a CPU); every chunk has this size, so one
            compiled program serves all. A progress bar shows on long runs.
        devices: split the responses of each chunk (and the rows of the design's
            statistics pass) over devices: a number, a list of devices or a
            ``jax.sharding.Mesh`` (see :func:`fit_reml`).
        verbose: the progress bar (tqdm when installed).
        max_iter: as in :func:`fit_reml`.
        dtype: as in :func:`fit_reml`.
        options: as in :func:`fit_reml`.

    Returns:
        A :class:`FitTable`, one row per response (index: the response names).
        A response with missing values is not fitted and a constant one has
        nothing to fit: their rows say so in ``message``, with NaN estimates;
        no response changes another's fit.

    Examples:
        sleepstudy's reaction times and the same times doubled, as two responses:

        >>> import jaxmixed as jm
        >>> sleep = jm.load_dataset("sleepstudy").assign(Twice=lambda d: 2 * d["Reaction"])
        >>> table = jm.fit_reml_many("y ~ Days + (Days | Subject)", sleep, responses=["Reaction", "Twice"])
        >>> table["Days"].round(3).tolist(), table["converged"].tolist()
        ([10.467, 20.935], [True, True])
    """
    inputs = Inputs.from_arguments(
        "fit_reml_many",
        formula=formula,
        data=data,
        y=y,
        X=X,
        Z=Z,
        groups=groups,
        weights=weights,
        reml=reml,
        max_iter=max_iter,
        options=options,
        dtype=dtype,
        devices=devices,
    )
    ys, labels, design, arrays = _shared_design(inputs, responses)
    reasons = _screen(ys)
    fits = _fit_responses(inputs, design, arrays, ys, reasons, batch_size, verbose)
    source = TableSource(_response_models(inputs.formula, design, arrays, ys, labels), fits, inputs.options)
    warn_unconverged_fits(fits, reasons)
    return fit_table(design, fits, labels, reasons, source)


def _shared_design(
    inputs: Inputs, responses: Any
) -> tuple[Float[np.ndarray, "K n"], pd.Index, Design, ModelArrays]:
    """The (K, n) responses, their labels (K,), and the design they all share
    (its response a placeholder: the design does not depend on it)."""
    if inputs.formula is not None:
        data = inputs.data
        ys, labels = _response_matrix(data, responses, None)
        covariates = data.drop(columns=[c for c in labels if c in data.columns])
        frame = covariates.assign(**{_PLACEHOLDER: np.arange(len(covariates), dtype=float)})
        formula = _placeholder_formula(inputs.formula)
        weights = inputs.weights
        assert weights is None or isinstance(weights, str), (
            "_check_source: with a formula, weights is a column name"
        )
        design, arrays = build_design(formula, frame, missing=inputs.missing, weights=weights)
    else:
        ys, labels = _response_matrix(None, responses, inputs.y)
        placeholder = np.arange(ys.shape[1], dtype=float)
        design, arrays = design_from_arrays(
            placeholder, inputs.X, inputs.Z, inputs.groups, missing=inputs.missing, weights=inputs.weights
        )
    if ys.shape[1] != len(arrays.y):
        raise ValueError(f"the responses have {ys.shape[1]} rows but the design has {len(arrays.y)}")
    return ys, labels, design, arrays


def _response_models(
    formula: str | None, design: Design, arrays: ModelArrays, ys: Float[np.ndarray, "K n"], labels: pd.Index
) -> Callable[[int], tuple[Design, ModelArrays]]:
    """``model(k)``: the design and arrays of response k's own fit (for ``FitTable.result``)."""

    def model(k: int) -> tuple[Design, ModelArrays]:
        name = str(labels[k])
        formula_k = None if formula is None else _with_response(formula, name)
        return (
            dataclasses.replace(design, response=name, formula=formula_k),
            dataclasses.replace(arrays, y=ys[k]),
        )

    return model


def _with_response(formula: str, name: str) -> str:
    """``formula`` with ``name`` as its response (back-quoted when not a plain name)."""
    rhs = formula.split("~", 1)[1]
    return f"{name} ~{rhs}" if re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name) else f"`{name}` ~{rhs}"


def _fit_responses(
    inputs: Inputs,
    design: Design,
    arrays: ModelArrays,
    ys: Float[np.ndarray, "K n"],
    reasons: dict[int, str],
    batch_size: int | None,
    verbose: bool,
) -> FitResult:
    """The vmapped fits (leading axis K) of every response ``ys`` (K, n), in
    chunks of ``batch_size`` (host loop)."""
    ys = ys.copy()
    if reasons:  # unfittable responses are replaced by a fittable one and discarded
        good = [k for k in range(len(ys)) if k not in reasons]
        filler = ys[good[0]] if good else np.arange(ys.shape[1], dtype=float)
        ys[list(reasons)] = filler
    mesh, options = inputs.mesh, inputs.options
    devices = n_devices(mesh)
    with jax.enable_x64(True):
        stats, ys, per_fit = _design_statistics(inputs, design, arrays, ys)
        batch_size = checked_batch_size(batch_size, len(ys), per_fit, devices)
        host_ys = ys.astype(inputs.dtype)

        def full(ids: Int[np.ndarray, " batch"]) -> FitResult:
            return to_host(jit_fit_responses(stats, shard_batch(host_ys[ids], mesh), options))

        def screened(ids: Int[np.ndarray, " batch"]) -> tuple[FitResult, Bool[np.ndarray, " batch"]]:
            return to_host(jit_fit_responses_screened(stats, shard_batch(host_ys[ids], mesh), options))

        progress = Progress(len(ys), "fit", verbose and len(ys) > batch_size)
        return run_chunks(
            len(ys),
            batch_size,
            full,
            progress=progress,
            screened=screened if options.boundary else None,
            refit_size=refit_batch_size(batch_size, devices),
        )


def _design_statistics(
    inputs: Inputs, design: Design, arrays: ModelArrays, ys: Float[np.ndarray, "K n"]
) -> tuple[DesignStatistics, Float[np.ndarray, "K n_padded"], int]:
    """The shared design's statistics (rows split over the devices), the
    responses (K, n') with the rows padded to a multiple of the devices, and
    the memory of one fit in bytes. Call inside ``jax.enable_x64(True)``."""
    rows = prepare(design, arrays, dtype=inputs.dtype)
    n = len(arrays.y)
    devices = n_devices(inputs.mesh)
    size = -(-n // devices) * devices
    if size != n:  # padded rows (X = Z = 0, response 0) add nothing to the sums
        rows = pad_data(rows, size)
        ys = np.pad(ys, ((0, 0), (0, size - n)))
    placed, _ = shard_rows(rows, [], inputs.mesh)
    stats = jit_design_statistics(placed, jnp.asarray(n, inputs.dtype))
    return stats, ys, per_fit_bytes(rows)

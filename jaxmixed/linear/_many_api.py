"""``fit_reml_many`` and ``fit_reml_stacked``: thousands of fits as one computation.

- ``fit_reml_many(formula, data, responses=[...])``: every response shares
  the formula's design (genes over samples, outcomes over one study). The
  design's statistics are built once; each chunk of responses is one
  vmapped fit (``_many.fit_responses``).
- ``fit_reml_stacked(formula, datasets)``: K data sets of one model (a
  simulation study), padded to common sizes and fitted as one vmapped
  computation (``_many.fit_stacked``).

Both return a :class:`FitTable`: a tidy DataFrame with one row per fit whose
``result(k)`` gives fit k as a full :class:`MixedModelResults`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
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
from ..core._compile import compiled
from ..core._fit import FitResult
from ..core._many import (
    default_batch_size,
    jit_fit_responses,
    jit_fit_responses_screened,
    jit_fit_stacked,
    pad_data,
    per_fit_bytes,
    refit_batch_size,
    run_chunks,
    stack_data,
)
from ..core._progress import Progress
from ..core._sharding import n_devices, shard_batch, shard_rows, to_host
from ..core._statistics import DesignStatistics, design_statistics
from ..core._status import RESULTS
from ..design._design import Design, ModelArrays, build_design, design_from_arrays
from ..design._names import parameter_names, parameter_values
from ..design._prepare import prepare
from ._inputs import Inputs
from ._results import ConvergenceWarning, MixedModelResults, build_results

__all__ = ["FitTable", "fit_reml_many", "fit_reml_stacked"]

_PLACEHOLDER = "__jaxmixed_response__"


@dataclasses.dataclass(frozen=True)
class _Source:
    """What ``FitTable.result(k)`` needs: ``model(k)`` gives fit k's design and
    arrays (built when asked: thousands of fits need only the table)."""

    model: Callable[[int], tuple[Design, ModelArrays]]
    fits: FitResult
    options: FitOptions


class FitTable(pd.DataFrame):
    """A tidy table of many fits (one row each) that also gives each fit whole.

    Columns: ``objective`` (REML criterion or deviance), ``converged``,
    ``singular``, ``message`` (why the fit stopped, or why it was not
    fitted), ``n_iter``; the fixed effects by name and their standard errors
    (``se_<name>``); the variance parameters in lme4's
    ``confint(oldNames = FALSE)`` names (``sd_(Intercept)|Subject``,
    ``cor_Days.(Intercept)|Subject``) and ``sigma``. A fit that could not be
    made has NaN estimates and its reason in ``message``.

    ``result(k)``: fit k (a position, or a label of the index) as a
    :class:`MixedModelResults`. Slices of the table are plain DataFrames.
    """

    _metadata = ["_source"]
    _source: _Source  # set by _table

    @property
    def _constructor(self):
        return pd.DataFrame

    def result(self, k: Hashable) -> MixedModelResults:
        """Fit ``k`` (a position or an index label) as a full :class:`MixedModelResults`."""
        source = self._source
        pos = k if isinstance(k, int | np.integer) and k not in self.index else self.index.get_loc(k)
        if not isinstance(pos, int | np.integer):  # a slice or a mask: a label of several rows
            raise TypeError(f"the label {k!r} names several fits: pass a position")
        if not 0 <= int(pos) < len(self):
            raise IndexError(f"fit {k} is out of range for {len(self)} fits")
        pos = int(pos)
        one = jax.tree.map(lambda a: np.asarray(np.asarray(a)[pos]), source.fits)  # 0-d arrays, not scalars
        design, arrays = source.model(pos)
        levels = [f.n_levels for f in design.factors]
        one = dataclasses.replace(
            one,
            b=tuple(b[:j] for b, j in zip(one.b, levels, strict=True)),
            b_cov=tuple(c[:j] for c, j in zip(one.b_cov, levels, strict=True)),
        )
        return build_results(design, arrays, one, source.options)


def _table(
    design: Design, fits: FitResult, index: pd.Index, reasons: dict[int, str], source: _Source
) -> FitTable:
    """The tidy table of ``fits`` (numpy leaves, leading axis K)."""
    n_fits = len(index)
    messages = [
        RESULTS[jax.tree.map(lambda a, k=k: np.asarray(np.asarray(a)[k]), fits.result)] for k in range(n_fits)
    ]
    for k, why in reasons.items():
        messages[k] = why
    names = list(design.fixed_names)
    beta = np.asarray(fits.beta, float)
    se = np.sqrt(np.diagonal(np.asarray(fits.vcov_beta, float), axis1=1, axis2=2))
    variance = parameter_values(design, [np.asarray(lam) for lam in fits.lambdas], np.asarray(fits.sigma))
    failed = np.zeros(len(index), bool)
    failed[list(reasons)] = True
    columns = {
        "objective": np.where(failed, np.nan, np.asarray(fits.objective, float)),
        "converged": np.asarray(fits.converged, bool) & ~failed,
        "singular": np.asarray(fits.singular, bool) & ~failed,
        "message": messages,
        "n_iter": np.asarray(fits.n_iter),
    }
    for j, name in enumerate(names):
        columns[name] = np.where(failed, np.nan, beta[:, j])
    for j, name in enumerate(names):
        columns[f"se_{name}"] = np.where(failed, np.nan, se[:, j])
    for j, name in enumerate(parameter_names(design)):
        columns[name] = np.where(failed, np.nan, variance[:, j])
    table = FitTable(columns, index=index)
    object.__setattr__(table, "_source", source)
    return table


def _warn_unconverged(fits: FitResult, reasons: dict[int, str]) -> None:
    constant = np.asarray(fits.result == RESULTS.constant_response)  # elementwise over the fits
    unconverged = ~np.asarray(fits.converged, bool) & ~constant
    bad = [int(k) for k in np.flatnonzero(unconverged) if k not in reasons]
    if bad:
        warnings.warn(
            f"{len(bad)} of {len(np.asarray(fits.objective))} fits did not converge (first: {bad[:5]}); "
            "see the 'converged' and 'message' columns",
            ConvergenceWarning,
            stacklevel=3,
        )


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
        formula, data: as in :func:`fit_reml`; ``data`` holds the covariates
            (complete: a missing covariate is an error) and the responses.
        responses: the names of the response columns of ``data``, or an
            (n, K) matrix (array or DataFrame: its column names label the fits).
        reml: REML (default) or ML.
        y, X, Z, groups, weights: array input as in :func:`fit_reml`, with
            ``y`` an (n, K) response matrix.
        batch_size: fits per vmapped chunk (default: as many as fit in
            512 MiB, at most 1,024 on a CPU); every chunk has this size, so one
            compiled program serves all. A progress bar shows on long runs.
        devices: split the responses of each chunk (and the rows of the design's
            statistics pass) over devices: a number, a list of devices or a
            ``jax.sharding.Mesh`` (see :func:`fit_reml`).
        verbose: the progress bar (tqdm when installed).
        max_iter, dtype, options: as in :func:`fit_reml`.

    Returns:
        A :class:`FitTable`, one row per response (index: the response names).
        A response with missing values is not fitted and a constant one has
        nothing to fit: their rows say so in ``message``, with NaN estimates;
        no response changes another's fit.
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
    source = _Source(_response_models(inputs.formula, design, arrays, ys, labels), fits, inputs.options)
    _warn_unconverged(fits, reasons)
    return _table(design, fits, labels, reasons, source)


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
        batch_size = _batch_size(batch_size, len(ys), per_fit, devices)
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
    stats = _jit_design_statistics(placed, jnp.asarray(n, inputs.dtype))
    return stats, ys, per_fit_bytes(rows)


def _batch_size(batch_size: int | None, n_fits: int, per_fit: int, devices: int) -> int:
    """The chunk size: ``batch_size`` checked, or as many fits as fit in memory."""
    if batch_size is None:
        return default_batch_size(n_fits, per_fit, multiple=devices)
    if int(batch_size) < 1 or int(batch_size) % devices:
        raise ValueError(
            f"batch_size must be a positive multiple of the {devices} device(s), got {batch_size}"
        )
    return int(batch_size)


_jit_design_statistics = compiled(design_statistics)


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
        formula, datasets: a formula and a sequence of K DataFrames.
        y, X, Z, groups: array input instead: ``y`` (K, n), ``X`` (K, n, p)
            (default an intercept), ``Z`` (K, n, q) (default a random
            intercept), ``groups`` (K, n).
        reml, batch_size, devices, verbose, max_iter, dtype, options: as in
            :func:`fit_reml_many` (``devices`` splits the data sets).

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
    source = _Source(lambda k: pairs[k], fits, inputs.options)
    _warn_unconverged(fits, {})
    return _table(pairs[0][0], fits, pd.RangeIndex(len(pairs), name="dataset"), {}, source)


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
        batch_size = _batch_size(batch_size, len(pairs), per_fit, n_devices(mesh))
        host = jax.tree.map(np.asarray, stacked)

        def run(ids: Int[np.ndarray, " batch"]) -> FitResult:
            chunk = shard_batch((jax.tree.map(lambda a: a[ids], host), ys[ids], n_obs[ids]), mesh)
            return to_host(jit_fit_stacked(*chunk, inputs.options))

        progress = Progress(len(pairs), "fit", verbose and len(pairs) > batch_size)
        return run_chunks(len(pairs), batch_size, run, progress=progress)

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
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

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
from ..core._options import FitOptions
from ..core._progress import Progress
from ..core._sharding import as_mesh, n_devices, shard_batch, shard_rows, to_host
from ..core._statistics import design_statistics
from ..core._status import RESULTS
from ..design._design import Design, ModelArrays, build_design
from ..design._names import parameter_names, parameter_values
from ..design._prepare import prepare
from ._api import ConvergenceWarning, _design, _resolve_options
from ._results import MixedModelResults, build_results

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

    @property
    def _constructor(self):
        return pd.DataFrame

    def result(self, k: Any) -> MixedModelResults:
        """Fit ``k`` (a position or an index label) as a full :class:`MixedModelResults`."""
        source: _Source = self._source
        pos = k if isinstance(k, int | np.integer) and k not in self.index else self.index.get_loc(k)
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
        return build_results(design, arrays, one, source.options.reml, source.options)


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
    constant = np.asarray(fits.result._value) == RESULTS.constant_response._value
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


def _response_matrix(data, responses, y) -> tuple[np.ndarray, pd.Index]:
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


def _screen(ys: np.ndarray) -> dict[int, str]:
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
    responses: Any = None,
    *,
    reml: bool = True,
    y: Any = None,
    X: Any = None,
    Z: Any = None,
    groups: Any = None,
    weights: Any = None,
    batch_size: int | None = None,
    devices: Any = None,
    verbose: bool = True,
    max_iter: int = 500,
    dtype=jnp.float64,
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
    if formula is not None:
        if data is None:
            raise ValueError("a formula needs data: fit_reml_many(formula, data, responses=[...])")
        ys, labels = _response_matrix(data, responses, None)
        covariates = data.drop(columns=[c for c in labels if c in data.columns])
        n = len(covariates)
        frame = covariates.assign(**{_PLACEHOLDER: np.arange(n, dtype=float)})
        design, arrays = build_design(_placeholder_formula(formula), frame, weights=weights)
    else:
        ys, labels = _response_matrix(None, responses, y)
        design, arrays = _design(
            None, None, np.arange(ys.shape[1], dtype=float), X, Z, groups, "raise", weights
        )
    if ys.shape[1] != len(arrays.y):
        raise ValueError(f"the responses have {ys.shape[1]} rows but the design has {len(arrays.y)}")
    options = _resolve_options(options, reml, max_iter, None)
    reasons = _screen(ys)
    fits = _fit_responses(design, arrays, ys, reasons, options, dtype, batch_size, as_mesh(devices), verbose)

    def model(k: int) -> tuple[Design, ModelArrays]:
        name = str(labels[k])
        formula_k = None if formula is None else _with_response(formula, name)
        return dataclasses.replace(design, response=name, formula=formula_k), dataclasses.replace(
            arrays, y=ys[k]
        )

    source = _Source(model, fits, options)
    _warn_unconverged(fits, reasons)
    return _table(design, fits, labels, reasons, source)


def _with_response(formula: str, name: str) -> str:
    rhs = formula.split("~", 1)[1]
    return f"{name} ~{rhs}" if re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", name) else f"`{name}` ~{rhs}"


def _fit_responses(design, arrays, ys, reasons, options, dtype, batch_size, mesh, verbose) -> FitResult:
    """The vmapped fits of every response, in chunks (host loop)."""
    ys = ys.copy()
    if reasons:  # unfittable responses are replaced by a fittable one and discarded
        good = [k for k in range(len(ys)) if k not in reasons]
        filler = ys[good[0]] if good else np.arange(ys.shape[1], dtype=float)
        ys[list(reasons)] = filler
    devices = n_devices(mesh)
    with jax.enable_x64(True):
        rows = prepare(design, arrays, dtype=dtype)
        n = len(arrays.y)
        size = -(-n // devices) * devices
        if size != n:
            rows = pad_data(rows, size)
            ys = np.pad(ys, ((0, 0), (0, size - n)))
        placed, _ = shard_rows(rows, [], mesh)
        stats = _jit_design_statistics(placed, jnp.asarray(n, dtype))
        batch_size = _batch_size(batch_size, len(ys), per_fit_bytes(rows), devices)
        host_ys = ys.astype(np.dtype(dtype))

        def full(ids: np.ndarray) -> FitResult:
            return to_host(jit_fit_responses(stats, shard_batch(host_ys[ids], mesh), options))

        def screened(ids: np.ndarray) -> tuple[FitResult, np.ndarray]:
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


def _batch_size(batch_size: int | None, n_fits: int, per_fit: int, devices: int) -> int:
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
    y: Any = None,
    X: Any = None,
    Z: Any = None,
    groups: Any = None,
    batch_size: int | None = None,
    devices: Any = None,
    verbose: bool = True,
    max_iter: int = 500,
    dtype=jnp.float64,
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
    pairs = _stacked_designs(formula, datasets, y, X, Z, groups)
    options = _resolve_options(options, reml, max_iter, None)
    first = pairs[0][0]
    for k, (d, _) in enumerate(pairs):
        if d.fixed_names != first.fixed_names or d.structures != first.structures:
            raise ValueError(
                f"data set {k} gives fixed effects {list(d.fixed_names)} and random-effects structure "
                f"{[s.q for s in d.structures]}, data set 0 {list(first.fixed_names)} and "
                f"{[s.q for s in first.structures]}: stacked data sets must give the same model"
            )
    mesh = as_mesh(devices)
    with jax.enable_x64(True):
        stacked = stack_data([prepare(d, a, dtype=dtype) for d, a in pairs])
        size = stacked.X.shape[1]
        ys = np.stack([np.pad(a.y, (0, size - len(a.y))) for _, a in pairs]).astype(np.dtype(dtype))
        n_obs = np.asarray([len(a.y) for _, a in pairs], np.dtype(dtype))
        per_fit = per_fit_bytes(jax.tree.map(lambda a: a[0], stacked)) + 8 * stacked.X[0].size
        batch_size = _batch_size(batch_size, len(pairs), per_fit, n_devices(mesh))
        host = jax.tree.map(np.asarray, stacked)

        def run(ids: np.ndarray) -> FitResult:
            chunk = shard_batch((jax.tree.map(lambda a: a[ids], host), ys[ids], n_obs[ids]), mesh)
            return to_host(jit_fit_stacked(*chunk, options))

        progress = Progress(len(pairs), "fit", verbose and len(pairs) > batch_size)
        fits = run_chunks(len(pairs), batch_size, run, progress=progress)
    source = _Source(lambda k: pairs[k], fits, options)
    _warn_unconverged(fits, {})
    return _table(first, fits, pd.RangeIndex(len(pairs), name="dataset"), {}, source)


def _stacked_designs(formula, datasets, y, X, Z, groups) -> list[tuple[Design, ModelArrays]]:
    if formula is not None:
        if datasets is None or isinstance(datasets, pd.DataFrame) or len(datasets) == 0:
            raise ValueError("fit_reml_stacked(formula, datasets) needs a non-empty list of DataFrames")
        out = []
        for k, df in enumerate(datasets):
            try:
                out.append(build_design(formula, df))
            except ValueError as err:
                raise ValueError(f"data set {k}: {err}") from err
        return out
    if y is None or groups is None:
        raise ValueError("pass a formula and datasets, or arrays y (K, n) and groups (K, n)")
    y = np.asarray(y, float)
    if y.ndim != 2:
        raise ValueError(f"y must be (K, n) for stacked data sets, got shape {y.shape}")
    out = []
    for k in range(len(y)):
        pick = lambda a, k=k: None if a is None else np.asarray(a)[k]  # noqa: E731
        try:
            out.append(_design(None, None, y[k], pick(X), pick(Z), pick(groups), "raise", None))
        except ValueError as err:
            raise ValueError(f"data set {k}: {err}") from err
    return out

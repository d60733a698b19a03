"""``fit_reml``: build the design on the host, call the pure fit, present the result."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..core._fit import FitResult, jit_fit_data
from ..core._options import FitOptions
from ..core._padding import drop_padded_levels, pad_to_buckets, padded_levels
from ..core._sharding import as_mesh, n_devices, shard_rows, to_host
from ..core._statistics import ModelData
from ..design._design import Design, ModelArrays, build_design, design_from_arrays
from ..design._prepare import prepare
from ._results import MixedModelResults, build_results, fit_status

__all__ = ["ConvergenceWarning", "fit_reml"]


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before meeting its convergence criteria."""


def _design(formula, data, y, X, Z, groups, missing, weights) -> tuple[Design, ModelArrays]:
    if formula is not None:
        if y is not None or X is not None or Z is not None or groups is not None:
            raise ValueError("pass either a formula with data, or arrays (y, X, Z, groups), not both")
        if data is None:
            raise ValueError("a formula needs data: fit_reml(formula, data=df)")
        if weights is not None and not isinstance(weights, str):
            raise TypeError("with a formula, weights is the name of a column of data")
        return build_design(formula, data, missing=missing, weights=weights)
    if y is None:
        raise ValueError("pass a formula and data, or arrays: fit_reml(y=..., X=..., groups=...)")
    return design_from_arrays(y, X, Z, groups, missing=missing, weights=weights)


@functools.lru_cache(maxsize=32)
def _default_options(key: tuple) -> FitOptions:
    """``FitOptions`` of the settings ``key`` = (type, reml, type, max_iter, optimizer)."""
    _, reml, _, max_iter, optimizer = key
    return FitOptions(reml=reml, max_iter=max_iter, optimizer=optimizer)


def _resolve_options(options: FitOptions | None, reml, max_iter, optimizer) -> FitOptions:
    if options is None:
        # FitOptions is immutable and costs ~0.1 ms to build: reuse one per
        # setting (types in the key, so that reml=1 stays 1, not True).
        key = (type(reml), reml, type(max_iter), max_iter, optimizer)
        try:
            return _default_options(key)
        except TypeError:  # an unhashable setting (e.g. optimizer): no cache
            return FitOptions(reml=reml, max_iter=max_iter, optimizer=optimizer)
    given = {"reml": (reml, True), "max_iter": (max_iter, 500), "optimizer": (optimizer, None)}
    clash = [k for k, (v, d) in given.items() if v is not d and v != d and v != getattr(options, k)]
    if clash:
        raise ValueError(
            f"{clash} given both as arguments and (differently) in options=FitOptions(...): "
            "set them in FitOptions only"
        )
    return options


def _fit_rows(rows: ModelData, y: np.ndarray, options: FitOptions, mesh) -> FitResult:
    """The compiled fit of ``rows`` (levels already padded), padded to its bucket
    sizes, on one device or with the rows split over ``mesh``."""
    dtype = rows.X.dtype
    n = len(y)
    padded = pad_to_buckets(rows, multiple=1 if mesh is None else n_devices(mesh))
    y_padded = np.pad(np.asarray(y, dtype), (0, padded.X.shape[0] - n))
    n_obs = np.asarray(n, dtype)
    if mesh is None:
        return jax.device_get(jit_fit_data(padded, y_padded, options, n_obs=n_obs))
    placed, (y_placed,) = shard_rows(padded, [y_padded], mesh)
    return to_host(jit_fit_data(placed, y_placed, options, n_obs=jnp.asarray(n_obs)))


def fit_reml(
    formula: str | None = None,
    data: pd.DataFrame | None = None,
    *,
    reml: bool = True,
    y: Any = None,
    X: Any = None,
    Z: Any = None,
    groups: Any = None,
    weights: Any = None,
    optimizer=None,
    max_iter: int = 500,
    dtype=jnp.float64,
    missing: str = "raise",
    memory_limit: int | None = None,
    options: FitOptions | None = None,
    devices: Any = None,
) -> MixedModelResults:
    """Fits a linear mixed model by REML (default) or maximum likelihood.

    Model (lme4's): ``y = Xβ + Zb + ε`` with ``b ~ N(0, σ²ΛΛᵀ)`` per level of
    each grouping factor and ``ε ~ N(0, σ²I)``. β and σ² are profiled out; the
    criterion is minimised over the log-Cholesky parameters of Λ. REML (the
    default) gives unbiased variance components, as lme4's ``lmer`` does;
    ``reml=False`` gives maximum likelihood, which likelihood-ratio tests of
    fixed effects (models with different X) need.

    Args:
        formula: lme4-style, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
            Random-effects terms ``(expr | g)``, ``(expr || g)`` (uncorrelated),
            ``(1 | a/b)`` (nested), ``(1 | a:b)``; several factors may be
            crossed or nested. The rest is read by formulaic (``C(x)``,
            ``np.log(x)``, ``I(x**2)``, ``a*b``, ``0 +`` …).
        data: a DataFrame with the columns the formula uses.
        reml: True for REML, False for maximum likelihood.
        y, X, Z, groups: array input instead of formula and data (one grouping
            factor): ``y`` (n,), ``X`` (n, p) (default: an intercept), ``Z``
            (n, q) (default: a random intercept), ``groups`` (n,) level labels.
        weights: prior weights, as lme4's ``weights``: observation i has
            residual variance σ²/wᵢ. The name of a column of ``data`` (formula
            input) or an array (n,) (array input); positive and finite.
        optimizer: an optax ``GradientTransformation`` for the main
            optimisation; default (None): L-BFGS with a weak-Wolfe line search.
        max_iter: iteration limit of the optimiser (default 500).
        dtype: ``jnp.float64`` (default; JAX's global setting is left alone)
            or ``jnp.float32`` (see the README for what float32 gives).
        missing: ``"raise"`` (default) or ``"drop"`` rows with missing values.
        memory_limit: bytes allowed for the dense block of the grouping
            factors after the first; default half the machine's memory.
        options: a :class:`FitOptions` with every setting (tolerances,
            boundary handling, start); when given, its ``reml``, ``optimizer``
            and ``max_iter`` are used, and those arguments, if changed from
            their defaults, must agree with it (else ValueError).
        devices: split the rows over several devices for the statistics
            pass (each device sums its rows; XLA adds the sums): ``None``
            (default: one device), a number of devices, a list of
            ``jax.Device`` or a ``jax.sharding.Mesh``. Under
            ``jax.distributed`` pass ``jax.devices()`` (every process's
            devices) and call ``fit_reml`` in every process with the same data.

    Returns:
        A ``MixedModelResults``. A fit that did not converge has
        ``converged=False`` and emits a ``ConvergenceWarning``.
    """
    design, arrays = _design(formula, data, y, X, Z, groups, missing, weights)
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    options = _resolve_options(options, reml, max_iter, optimizer)
    with jax.enable_x64(True):
        real_levels = [f.n_levels for f in design.factors]
        rows = prepare(
            design,
            arrays,
            dtype=dtype,
            memory_limit=memory_limit,
            n_levels=padded_levels(real_levels),
            on_device=False,
        )
        result = drop_padded_levels(_fit_rows(rows, arrays.y, options, as_mesh(devices)), real_levels)
    converged, message = fit_status(result)  # on the host: no JAX dispatch
    if not converged:
        warnings.warn(
            f"the fit did not converge: {message} after {int(result.n_iter)} "
            "iterations; the estimates may be unreliable",
            ConvergenceWarning,
            stacklevel=2,
        )
    return build_results(design, arrays, result, options.reml, options)

"""``fit_reml``: build the design on the host, call the pure fit, present the result."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._design import Design, ModelArrays, build_design, design_from_arrays
from ._fit import jit_fit_data
from ._optimise import RESULTS, FitOptions
from ._results import MixedModelResults, build_results
from ._statistics import ModelData, model_data

__all__ = ["ConvergenceWarning", "fit_reml", "prepare"]


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before meeting its convergence criteria."""


def prepare(
    design: Design, arrays: ModelArrays, *, dtype=jnp.float64, memory_limit: int | None = None
) -> ModelData:
    """The pure layer's :class:`ModelData` of a validated design (host side).

    Call inside ``with jax.enable_x64(True):`` for float64.
    """
    return model_data(
        arrays.X,
        arrays.Z,
        arrays.codes,
        [f.n_levels for f in design.factors],
        design.structures,
        weights=arrays.weights,
        dtype=dtype,
        memory_limit=memory_limit,
    )


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

    Returns:
        A ``MixedModelResults``. A fit that did not converge has
        ``converged=False`` and emits a ``ConvergenceWarning``.
    """
    design, arrays = _design(formula, data, y, X, Z, groups, missing, weights)
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    if options is None:
        options = FitOptions(reml=reml, max_iter=max_iter, optimizer=optimizer)
    else:
        given = {"reml": (reml, True), "max_iter": (max_iter, 500), "optimizer": (optimizer, None)}
        clash = [k for k, (v, d) in given.items() if v is not d and v != d and v != getattr(options, k)]
        if clash:
            raise ValueError(
                f"{clash} given both as arguments and (differently) in options=FitOptions(...): "
                "set them in FitOptions only"
            )
    with jax.enable_x64(True):
        rows = prepare(design, arrays, dtype=dtype, memory_limit=memory_limit)
        result = jit_fit_data(rows, jnp.asarray(arrays.y, dtype), options)
        result = jax.tree.map(np.asarray, result)
    if not bool(result.converged):
        warnings.warn(
            f"the fit did not converge: {RESULTS[result.result]} after {int(result.n_iter)} "
            "iterations; the estimates may be unreliable",
            ConvergenceWarning,
            stacklevel=2,
        )
    return build_results(design, arrays, result, options.reml)

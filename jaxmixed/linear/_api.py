"""``fit_reml``: build the design on the host, call the pure fit, present the result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax
import pandas as pd
from jax.sharding import Mesh
from jaxtyping import Float, Shaped

from ..core import FitOptions
from ..core._fit import FitResult, jit_fit_data
from ..core._padding import drop_padded_levels, pad_to_buckets, padded_levels
from ..core._sharding import n_devices, shard_rows, to_host
from ..core._statistics import ModelData
from ..design._design import Design, ModelArrays
from ..design._prepare import prepare
from ._inputs import Inputs
from ._results import ConvergenceWarning, MixedModelResults, build_results, warn_unconverged
from ._update import FitCall

# ConvergenceWarning is defined with the results; it is imported from here too.
__all__ = ["ConvergenceWarning", "fit_design", "fit_reml", "refit"]


def fit_reml(
    formula: str | None = None,
    data: pd.DataFrame | None = None,
    *,
    reml: bool = True,
    y: Float[npt.ArrayLike, " n"] | None = None,
    X: Float[npt.ArrayLike, "n p"] | None = None,
    Z: Float[npt.ArrayLike, "n q"] | None = None,
    groups: Shaped[npt.ArrayLike, " n"] | None = None,
    weights: str | Float[npt.ArrayLike, " n"] | None = None,
    offset: str | Float[npt.ArrayLike, " n"] | None = None,
    optimizer: optax.GradientTransformation | None = None,
    max_iter: int = 500,
    dtype: jax.typing.DTypeLike = jnp.float64,
    missing: str = "raise",
    memory_limit: int | None = None,
    options: FitOptions | None = None,
    devices: int | Sequence[Any] | Mesh | None = None,  # Any: jax.Device, not a static type
) -> MixedModelResults:
    """Fits a linear mixed model by REML (default) or maximum likelihood.

    Model (lme4's): ``y = Xβ + Zb + offset + ε`` with ``b ~ N(0, σ²ΛΛᵀ)`` per
    level of each grouping factor and ``ε ~ N(0, σ²I)``; ``offset`` is known (0
    without one) and is taken off the response before the fit, as lmer does. β
    and σ² are profiled out; the criterion is minimised over the log-Cholesky
    parameters of Λ. REML (the default) gives unbiased variance components, as
    lme4's ``lmer`` does; ``reml=False`` gives maximum likelihood, which
    likelihood-ratio tests of fixed effects (models with different X) need.

    Args:
        formula: lme4-style, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
            Random-effects terms ``(expr | g)``, ``(expr || g)`` (uncorrelated),
            ``(1 | a/b)`` (nested), ``(1 | a:b)``; several factors may be
            crossed or nested. The rest is read by formulaic (``C(x)``,
            ``np.log(x)``, ``I(x^2)`` (R's power; ``**`` too), ``a*b``, ``0 +`` …).
            Fixed-effect names are R's: ``(Intercept)``, ``recipeB``, ``I(x^2)``.
            ``+ offset(expr)`` terms (one or several; a column or an expression
            of columns such as ``offset(2 * Days)`` or ``offset(log(n))``) are
            added to the mean with coefficient 1.
        data: a DataFrame with the columns the formula uses.
        reml: True (default) for REML, False for maximum likelihood; a value
            that is not a bool is a TypeError.
        y: array input instead of formula and data (one grouping factor): the
            response (n,).
        X: array input: the fixed effects (n, p) (default: an intercept).
        Z: array input: the random effects' columns (n, q) (default: a random intercept).
        groups: array input: the level labels (n,).
        weights: prior weights, as lme4's ``weights``: observation i has
            residual variance σ²/wᵢ. The name of a column of ``data`` (formula
            input) or an array (n,) (array input); positive and finite.
        offset: lme4's ``offset``, summed with the formula's ``offset()``
            terms: the name of a column of ``data`` or an expression of its
            columns (``"log(n)"``), or an array (n,), one value per row of
            ``data`` (formula input) or of ``y`` (array input). Default None.
            Rows whose offset reads a missing value are treated as ``missing``
            says. ``predict`` evaluates the offsets on new data: a column or
            expression again, an array only if given to ``predict``.
        optimizer: an optax ``GradientTransformation`` for the main
            optimisation; default (None): L-BFGS with a weak-Wolfe line search.
        max_iter: iteration limit of the optimiser, a positive integer
            (default 500).
        dtype: ``jnp.float64`` (default; JAX's global setting is left alone)
            or ``jnp.float32`` (see the README for what float32 gives).
        missing: ``"raise"`` (default) or ``"drop"`` rows with missing values in
            any column used (response, terms, grouping factors, weights, offsets).
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
        ``converged=False`` and emits a ``ConvergenceWarning``. With offsets,
        ``offset`` holds their sum (n,) and ``fitted``, ``fitted_fixed``,
        ``residuals``, ``predict`` and ``simulate`` are on the response's scale
        (offset included), as lme4's.

    Examples:
        lme4's ``lmer(Reaction ~ Days + (Days | Subject), sleepstudy)``:

        >>> import jaxmixed as jm
        >>> fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
        >>> round(fit.objective, 3), fit.fixed_effects.round(3).to_dict()
        (1743.628, {'(Intercept)': 251.405, 'Days': 10.467})
        >>> fit.varcorr.sdcor.round(2).tolist()
        [24.74, 5.92, 0.07, 25.59]
    """
    inputs = Inputs.from_arguments(
        "fit_reml",
        formula=formula,
        data=data,
        y=y,
        X=X,
        Z=Z,
        groups=groups,
        weights=weights,
        offset=offset,
        missing=missing,
        reml=reml,
        max_iter=max_iter,
        optimizer=optimizer,
        options=options,
        dtype=dtype,
        devices=devices,
    )
    design, arrays = inputs.model()
    result = _fit(inputs, design, arrays, memory_limit)
    warn_unconverged(result)
    call = FitCall.record(
        fit_reml, formula, data, reml=reml, y=y, X=X, Z=Z, groups=groups, weights=weights, offset=offset,
        optimizer=optimizer, max_iter=max_iter, dtype=dtype, missing=missing, memory_limit=memory_limit,
        options=options, devices=devices,
    )  # fmt: skip
    return dataclasses.replace(build_results(design, arrays, result, inputs.options), call=call)


def _fit(inputs: Inputs, design: Design, arrays: ModelArrays, memory_limit: int | None) -> FitResult:
    """The fit of one model (numpy leaves): :func:`fit_design` with the inputs' settings."""
    return fit_design(design, arrays, inputs.options, dtype=inputs.dtype, mesh=inputs.mesh, memory_limit=memory_limit)


def fit_design(
    design: Design,
    arrays: ModelArrays,
    options: FitOptions,
    *,
    dtype: Any = np.float64,
    mesh: Mesh | None = None,
    memory_limit: int | None = None,
) -> FitResult:
    """The fit of one built design (numpy leaves): the rows padded by :func:`padded_model`,
    fitted on one device or with the rows split over ``mesh``, and the padded levels
    dropped from the result."""
    with jax.enable_x64(True):
        multiple = 1 if mesh is None else n_devices(mesh)
        data, y, n_obs = padded_model(design, arrays, dtype, memory_limit=memory_limit, multiple=multiple)
        if mesh is None:
            result = jax.device_get(jit_fit_data(data, y, options, n_obs=n_obs))
        else:
            placed, (y_placed,) = shard_rows(data, [y], mesh)
            result = to_host(jit_fit_data(placed, y_placed, options, n_obs=jnp.asarray(n_obs)))
        return drop_padded_levels(result, [f.n_levels for f in design.factors])


def padded_model(
    design: Design, arrays: ModelArrays, dtype: Any, *, memory_limit: int | None = None, multiple: int = 1
) -> tuple[ModelData, Float[np.ndarray, " n_padded"], Float[np.ndarray, ""]]:
    """The rows as :func:`fit_design` fits them: levels, rows (to a multiple of
    ``multiple``, the devices' count) and cross entries padded to bucket sizes, so that
    data sets of one structure and a similar size share one program (the fit,
    Satterthwaite's derivatives, the profile). Returns (the rows, y less its offset
    (``ModelArrays.working_y``: lmer fits y − offset) padded with zeros, ``n_obs`` the
    real row count to pass to the statistics), host arrays."""
    real_levels = [f.n_levels for f in design.factors]
    rows = prepare(
        design, arrays, dtype=dtype, memory_limit=memory_limit, n_levels=padded_levels(real_levels), on_device=False
    )
    padded = pad_to_buckets(rows, multiple=multiple)
    n = len(arrays.y)
    y = np.pad(np.asarray(arrays.working_y, dtype), (0, padded.X.shape[0] - n))
    return padded, y, np.asarray(n, dtype)


def refit(
    results: MixedModelResults,
    options: FitOptions,
    *,
    design: Design | None = None,
    arrays: ModelArrays | None = None,
) -> MixedModelResults:
    """The same model and rows fitted again with ``options`` (lme4's ``refitML`` for
    ``FitOptions(reml=False)``), in the fit's dtype; a fit that does not converge warns.
    ``design`` and ``arrays``: another model of the rows instead (``drop1``'s reduced ones)."""
    design = results.design if design is None else design
    arrays = results.arrays if arrays is None else arrays
    dtype = np.asarray(results.fit_result.beta).dtype
    result = fit_design(design, arrays, options, dtype=dtype)
    warn_unconverged(result)
    return build_results(design, arrays, result, options)

"""Parametric bootstrap (lme4's ``bootMer`` and ``confint(method = "boot")``).

Each replicate draws a response from the fitted model (``_simulate``) and
refits the same model to it. Every replicate shares the design's statistics,
so a chunk of replicates is one vmapped computation: simulate, response
statistics, fit (``_many.fit_responses``), compiled once.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh
from jaxtyping import Bool, Float, Int

from ..core import FitOptions
from ..core._callers import user_stacklevel
from ..core._compile import compiled
from ..core._fit import FitResult, jit_design_statistics
from ..core._many import (
    default_batch_size,
    fit_responses,
    fit_responses_screened,
    per_fit_bytes,
    refit_batch_size,
    run_chunks,
)
from ..core._progress import Progress
from ..core._sharding import as_mesh, n_devices, replicate, shard_batch, to_host
from ..core._simulate import simulate_draws
from ..core._statistics import DesignStatistics, ModelData
from ..design._design import Design
from ..design._names import parameter_names, parameter_values

__all__ = ["BootstrapResults", "parametric_bootstrap"]


@dataclasses.dataclass(frozen=True)
class BootstrapResults:
    """The replicate estimates of a parametric bootstrap.

    Attributes:
        replicates: (n, parameters) DataFrame, one row per replicate: the
            variance parameters in lme4's ``confint(oldNames = FALSE)`` names
            (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
            ``sigma``), then the fixed effects.
        original: the fitted model's values of the same parameters.
        converged, singular: (n,) per replicate.
        objective: (n,) each refit's criterion.
    """

    replicates: pd.DataFrame
    original: pd.Series
    converged: Bool[np.ndarray, " K"]
    singular: Bool[np.ndarray, " K"]
    objective: Float[np.ndarray, " K"]

    @property
    def n_replicates(self) -> int:
        """How many replicates were drawn."""
        return len(self.replicates)

    @property
    def bias(self) -> pd.Series:
        """Mean of the replicates minus the original estimate."""
        return self.replicates[self.converged].mean() - self.original

    @property
    def std_error(self) -> pd.Series:
        """Standard deviation of the replicates (bootstrap standard errors)."""
        return cast(pd.DataFrame, self.replicates[self.converged]).std(ddof=1)  # a mask selects rows

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals (``boot.ci(type = "perc")``) of every parameter.

        Replicates whose refit did not converge are left out (a warning counts
        them); a correlation that is undefined in a replicate (a standard
        deviation of 0) is left out of that parameter's interval.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        kept = self.replicates[self.converged].to_numpy()
        if len(kept) < len(self.replicates):
            warnings.warn(
                f"{len(self.replicates) - len(kept)} of {len(self.replicates)} bootstrap refits did "
                "not converge and are left out of the intervals",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        tails = np.asarray([(1 - level) / 2, (1 + level) / 2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
            bounds = np.nanquantile(kept, tails, axis=0)
        pct = [f"{100 * t:g}%" for t in tails]
        return pd.DataFrame(bounds.T, index=self.replicates.columns, columns=pct)


def _estimates(design: Design, fits: FitResult) -> Float[np.ndarray, "*K n_params+1+p"]:
    """(..., parameters): sd/cor/σ then β, as in :func:`parameter_names`."""
    variance = parameter_values(design, [np.asarray(lam) for lam in fits.lambdas], np.asarray(fits.sigma))
    return np.concatenate([variance, np.asarray(fits.beta, float)], axis=-1)


def _chunk(
    design: DesignStatistics,
    data: ModelData,
    fitted: FitResult,
    key: jax.Array,
    draws: jax.Array,
    options: FitOptions,
) -> FitResult:
    ys = simulate_draws(key, draws, data, fitted)
    return fit_responses(design, ys, options)


def _screened_chunk(
    design: DesignStatistics,
    data: ModelData,
    fitted: FitResult,
    key: jax.Array,
    draws: jax.Array,
    options: FitOptions,
) -> tuple[FitResult, jax.Array]:
    ys = simulate_draws(key, draws, data, fitted)
    return fit_responses_screened(design, ys, options)


_jit_chunk = compiled(_chunk)
_jit_screened_chunk = compiled(_screened_chunk)


def parametric_bootstrap(
    design: Design,
    data: ModelData,
    fitted: FitResult,
    options: FitOptions,
    n: int,
    key: jax.Array,
    *,
    batch_size: int | None = None,
    devices: int | Sequence[Any] | Mesh | None = None,  # Any: jax.Device, not a static type
    verbose: bool = True,
) -> BootstrapResults:
    """``n`` replicates: simulate from ``fitted`` over ``data``'s design, refit.

    Replicate k uses ``jax.random.fold_in(key, k)``: the same key gives the
    same replicates whatever ``batch_size`` or ``devices``. Call inside
    ``jax.enable_x64(True)`` for float64.
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of replicates, got {n}")
    mesh = as_mesh(devices)
    multiple = n_devices(mesh)
    if batch_size is None:
        batch_size = default_batch_size(n, per_fit_bytes(data), multiple=multiple)
    elif batch_size < 1 or batch_size % multiple:
        raise ValueError(
            f"batch_size must be a positive multiple of the {multiple} device(s), got {batch_size}"
        )
    stats = replicate(jit_design_statistics(data), mesh)
    data_r, fitted_r = replicate((data, fitted), mesh)

    def full(ids: Int[np.ndarray, " batch"]) -> FitResult:
        draws = shard_batch(np.asarray(ids, np.int32), mesh)
        return to_host(_jit_chunk(stats, data_r, fitted_r, key, draws, options))

    def screened(ids: Int[np.ndarray, " batch"]) -> tuple[FitResult, Bool[np.ndarray, " batch"]]:
        draws = shard_batch(np.asarray(ids, np.int32), mesh)
        return to_host(_jit_screened_chunk(stats, data_r, fitted_r, key, draws, options))

    progress = Progress(n, "replicate", verbose)
    fits = run_chunks(
        n,
        batch_size,
        full,
        progress=progress,
        screened=screened if options.boundary else None,
        refit_size=refit_batch_size(batch_size, multiple),
    )
    names = parameter_names(design) + list(design.fixed_names)
    return BootstrapResults(
        replicates=pd.DataFrame(_estimates(design, fits), columns=names),
        original=pd.Series(
            _estimates(design, jax.tree.map(np.asarray, fitted)), index=names, name="estimate"
        ),
        converged=np.asarray(fits.converged, bool),
        singular=np.asarray(fits.singular, bool),
        objective=np.asarray(fits.objective, float),
    )


def as_key(key: int | np.integer | jax.Array) -> jax.Array:
    """A PRNG key from a key or an integer seed."""
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        return key
    raise TypeError(f"key must be a jax.random key or an integer seed, got {type(key).__name__}")


# The result of one fit, in JAX arrays, from its numpy copy.
def as_jax(fitted: FitResult, dtype: jax.typing.DTypeLike) -> FitResult:
    """``fitted`` with its floating leaves as JAX arrays of ``dtype``."""
    return jax.tree.map(
        lambda a: (
            jnp.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else jnp.asarray(a)
        ),
        fitted,
    )

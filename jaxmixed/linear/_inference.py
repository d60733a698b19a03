"""Tests of the fixed effects as lmerTest reports them (``MixedModelResults.coef_table``).

``ddf="satterthwaite"`` (lmerTest's default): t tests with Satterthwaite's
degrees of freedom, from the exact Hessian of the deviance in the variance
parameters and the exact gradient of each coefficient's variance
(:func:`jaxmixed.core._inference.satterthwaite`). ``ddf="none"``: Wald z
tests (the normal distribution), as lme4's ``summary`` leaves them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..core._compile import compiled
from ..core._inference import satterthwaite
from ..core._statistics import model_statistics
from ..design._prepare import prepare

if TYPE_CHECKING:
    from ._results import MixedModelResults

__all__ = ["DDF_METHODS", "coef_table", "satterthwaite_df", "two_sided_p"]

DDF_METHODS = ("satterthwaite", "none")

def _compiler_options(stats, *args, **kwargs) -> dict:
    """XLA's backend optimisation off on a CPU: the derivative program is large and
    its arithmetic small (ψ has a few entries), so LLVM's passes cost more than they save."""
    del stats, args, kwargs
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


_jit_satterthwaite = compiled(satterthwaite, compiler_options=_compiler_options)
_jit_model_statistics = compiled(model_statistics)


def satterthwaite_df(results: MixedModelResults, contrasts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variances (k,), Satterthwaite df (k,)) of the contrasts (k, p) of β̂."""
    fit = results.fit_result
    free = tuple(int(k) for k in np.flatnonzero(~np.asarray(fit.at_boundary, bool)))
    dtype = np.asarray(fit.beta).dtype
    with jax.enable_x64(dtype == np.float64):
        data = prepare(results.design, results.arrays, dtype=dtype, on_device=False)
        stats = _jit_model_statistics(data, np.asarray(results.arrays.y, dtype))
        out = _jit_satterthwaite(stats, jnp.asarray(fit.phi, dtype), free, results.reml, jnp.asarray(contrasts, dtype))
        return np.asarray(out.variance), np.asarray(out.df)


def two_sided_p(statistic: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    """``P(|T| > |t|)`` for Student's t with ``df`` degrees of freedom (``df = inf``: the
    normal distribution), by the regularised incomplete beta function
    ``I_{df/(df+t²)}(df/2, 1/2)``."""
    t = np.abs(np.asarray(statistic, float))
    df = np.broadcast_to(np.asarray(df, float), t.shape)
    with jax.enable_x64(True):
        normal = 2.0 * jax.scipy.special.ndtr(-jnp.asarray(t))
        finite = jnp.isfinite(jnp.asarray(df))
        safe_df = jnp.where(finite, jnp.asarray(df), 1.0)
        student = jax.scipy.special.betainc(safe_df / 2.0, 0.5, safe_df / (safe_df + jnp.asarray(t) ** 2))
        return np.asarray(jnp.where(finite, student, normal))


def coef_table(results: MixedModelResults, ddf: str = "satterthwaite") -> pd.DataFrame:
    """One row per fixed effect: ``Estimate``, ``Std. Error``, then ``df``, ``t value``,
    ``Pr(>|t|)`` (``ddf="satterthwaite"``) or ``z value``, ``Pr(>|z|)`` (``ddf="none"``)."""
    if ddf not in DDF_METHODS:
        raise ValueError(f"ddf must be one of {DDF_METHODS}, got {ddf!r}")
    beta = results.fixed_effects
    se = results.fixed_effects_se
    table = pd.DataFrame({"Estimate": beta, "Std. Error": se})
    if ddf == "none":
        z = beta / se
        return table.assign(**{"z value": z, "Pr(>|z|)": two_sided_p(z.to_numpy(), np.inf)})
    _, df = satterthwaite_df(results, np.eye(len(beta)))
    t = beta / se
    p = two_sided_p(t.to_numpy(), df)
    return table.assign(**{"df": df, "t value": t, "Pr(>|t|)": p})

"""Upper tails of the t, F and χ² distributions, for the p-values of the tests, and the
beta distribution's quantiles, for exact binomial intervals.

Computed with jax.scipy's regularised incomplete beta and gamma functions in
float64 (the library depends on JAX, not on scipy).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = ["beta_quantile", "chi2_upper_tail", "f_table", "f_upper_tail", "two_sided_p"]


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


def f_upper_tail(statistic: float, num_df: float, den_df: float) -> float:
    """``P(F > statistic)`` for the F distribution with (``num_df``, ``den_df``) degrees of
    freedom: ``I_{d₂/(d₂ + d₁F)}(d₂/2, d₁/2)``."""
    with jax.enable_x64(True):
        d1, d2, f = (jnp.asarray(float(v)) for v in (num_df, den_df, statistic))
        return float(jax.scipy.special.betainc(d2 / 2.0, d1 / 2.0, d2 / (d2 + d1 * jnp.maximum(f, 0.0))))


def f_table(f: float, num_df: int, den_df: float, mean_sq: float) -> pd.DataFrame:
    """lmerTest's one-row F table: ``Sum Sq`` (``Mean Sq``·NumDF), ``Mean Sq``, ``NumDF``,
    ``DenDF``, ``F value`` and ``Pr(>F)`` (:func:`f_upper_tail`)."""
    return pd.DataFrame(
        {
            "Sum Sq": [mean_sq * num_df],
            "Mean Sq": [mean_sq],
            "NumDF": [num_df],
            "DenDF": [den_df],
            "F value": [f],
            "Pr(>F)": [f_upper_tail(f, num_df, den_df)],
        }
    )


def chi2_upper_tail(statistic: np.ndarray, df: np.ndarray) -> np.ndarray:
    """``P(χ²_df > statistic)``: the regularised upper incomplete gamma ``Q(df/2, x/2)``."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.maximum(np.asarray(statistic, float), 0.0))
        k = jnp.asarray(np.asarray(df, float))
        return np.asarray(jax.scipy.special.gammaincc(k / 2.0, x / 2.0))


@jax.jit
def _chi2_upper_quantile(p: jax.Array, df: jax.Array) -> jax.Array:
    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = jax.scipy.special.gammaincc(df / 2.0, mid / 2.0) > p
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 80, halve, (jnp.zeros_like(p), 10.0 * df + 100.0))
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=64)
def chi2_upper_quantile(p: float, df: float) -> float:
    """x with ``P(χ²_df > x) = p`` (R's ``qchisq(1 − p, df)``), by bisection of the upper
    tail on [0, 10·df + 100] (80 halvings: to float64's resolution). Cached by (p, df)."""
    with jax.enable_x64(True):
        return float(_chi2_upper_quantile(jnp.asarray(float(p)), jnp.asarray(float(df))))


@jax.jit
def _beta_quantile(q: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = jax.scipy.special.betainc(a, b, mid) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 64, halve, (jnp.zeros_like(q), jnp.ones_like(q)))
    return 0.5 * (lo + hi)


def beta_quantile(q: float | np.ndarray, a: float | np.ndarray, b: float | np.ndarray) -> np.ndarray:
    """The ``q`` quantile of the Beta(a, b) distribution: ``I_x(a, b) = q`` solved for x by
    64 bisections of [0, 1] (the distribution function is increasing; 2⁻⁶⁴ is below
    float64's resolution)."""
    with jax.enable_x64(True):
        args = jnp.broadcast_arrays(*(jnp.asarray(np.asarray(v, float)) for v in (q, a, b)))
        return np.asarray(_beta_quantile(*args))

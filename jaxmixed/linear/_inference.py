"""Tests of the fixed effects as lmerTest reports them (``MixedModelResults.coef_table``).

``ddf="satterthwaite"`` (lmerTest's default): t tests with Satterthwaite's
degrees of freedom, from the exact Hessian of the deviance in the variance
parameters and the exact gradient of each coefficient's variance
(:func:`jaxmixed.core._inference.satterthwaite`). ``ddf="kenward-roger"``:
Kenward and Roger's adjusted covariance and df, as pbkrtest computes them
(:mod:`jaxmixed.linear._kenward_roger`; REML fits). ``ddf="none"``: Wald z
tests (the normal distribution), as lme4's ``summary`` leaves them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np
import pandas as pd

from ..core._compile import compiled, unoptimised_on_cpu
from ..core._inference import SatterthwaiteResult, satterthwaite_masked
from ..core._statistics import model_statistics
from ._kenward_roger import kr_coef_table, kr_contest
from ._tails import f_table, two_sided_p

if TYPE_CHECKING:
    from ._results import MixedModelResults

__all__ = ["DDF_METHODS", "coef_table", "contest", "satterthwaite_df"]

DDF_METHODS = ("satterthwaite", "kenward-roger", "none")


def _satterthwaite_of_rows(data, y, n_obs, phi, at_boundary, reml, contrasts) -> SatterthwaiteResult:
    """:func:`~jaxmixed.core._inference.satterthwaite_masked` from the (padded) rows: the
    statistics and the derivatives in one compiled program, one for every boundary
    pattern and every data set of the structure and a similar size."""
    return satterthwaite_masked(model_statistics(data, y, n_obs=n_obs), phi, at_boundary, reml, contrasts)


_jit_satterthwaite = compiled(_satterthwaite_of_rows, compiler_options=unoptimised_on_cpu)


def satterthwaite_df(results: MixedModelResults, contrasts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variances (k,), Satterthwaite df (k,)) of the contrasts (k, p) of β̂."""
    from ._api import padded_model  # the user-level fit imports the results, which import this

    fit = results.fit_result
    at_boundary = np.asarray(fit.at_boundary, bool)
    dtype = np.asarray(fit.beta).dtype
    with jax.enable_x64(dtype == np.float64):
        data, y, n_obs = padded_model(results.design, results.arrays, dtype)
        phi, contrasts = (np.asarray(a, dtype) for a in (fit.phi, contrasts))
        out = _jit_satterthwaite(data, y, n_obs, phi, at_boundary, results.reml, contrasts)
        return np.asarray(out.variance), np.asarray(out.df)


def checked_ddf(ddf: str) -> str:
    """``ddf`` in lower case (lmerTest spells them ``"Satterthwaite"``, ``"Kenward-Roger"``),
    or a ValueError naming the choices."""
    key = ddf.lower() if isinstance(ddf, str) else ddf
    if key not in DDF_METHODS:
        raise ValueError(f"ddf must be one of {DDF_METHODS}, got {ddf!r}")
    return key


def coef_table(results: MixedModelResults, ddf: str = "satterthwaite") -> pd.DataFrame:
    """One row per fixed effect: ``Estimate``, ``Std. Error``, then ``df``, ``t value``,
    ``Pr(>|t|)`` (``ddf="satterthwaite"`` or ``"kenward-roger"``, whose standard errors
    are the adjusted ones) or ``z value``, ``Pr(>|z|)`` (``ddf="none"``)."""
    ddf = checked_ddf(ddf)
    if ddf == "kenward-roger":
        return kr_coef_table(results)
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


def _combined_df(nu: np.ndarray) -> float:
    """The denominator df of an F test from its directions' Satterthwaite df (lmerTest's
    rule): one direction or equal df: that df; any df ≤ 2: 2; else ``2E/(E − q)`` with
    ``E = Σ ν/(ν − 2)``, which matches the F's expectation."""
    if len(nu) == 1 or np.allclose(nu, nu[0], rtol=0.0, atol=1e-8):
        return float(nu[0])
    if np.any(nu <= 2):
        return 2.0
    e = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * e / (e - len(nu))


def contest(
    results: MixedModelResults, L: np.ndarray, rhs: float | np.ndarray = 0.0, ddf: str = "satterthwaite"
) -> pd.DataFrame:
    """F test of ``L β = rhs`` with Satterthwaite's (or Kenward–Roger's) denominator df
    (lmerTest's ``contest``).

    ``L`` (q, p) or (p,). Its covariance ``L Φ Lᵀ = P D Pᵀ`` is diagonalised;
    directions with eigenvalues below ``1e-8·max`` are dropped (the rank is the
    numerator df), ``F = Σ (Pᵢᵀ(Lβ − rhs))²/Dᵢ / q``, and each direction's
    Satterthwaite df combine into the denominator df (:func:`_combined_df`).
    Returns one row: ``Sum Sq``, ``Mean Sq`` (F·σ̂²), ``NumDF``, ``DenDF``,
    ``F value``, ``Pr(>F)``. ``ddf="kenward-roger"``: the same directions tested
    with Φ_A, KR's df and scaled F (:func:`~jaxmixed.linear._kenward_roger.kr_contest`).
    """
    ddf = checked_ddf(ddf)
    if ddf == "none":
        raise ValueError("contest needs a denominator df: ddf='satterthwaite' or 'kenward-roger'")
    beta = results.fixed_effects.to_numpy()
    L = np.atleast_2d(np.asarray(L, float))
    if L.ndim != 2 or L.shape[1] != len(beta):
        raise ValueError(f"L must have {len(beta)} columns (one per fixed effect), got shape {L.shape}")
    values, vectors = np.linalg.eigh(L @ results.vcov.to_numpy() @ L.T)
    keep = values > 1e-8 * max(values.max(initial=0.0), 0.0)
    if not np.any(keep):
        raise ValueError("L β has no variance: L is zero or outside the estimable space")
    rotated = vectors[:, keep].T @ L  # (q, p): the contrast's directions
    d = values[keep]
    rotated_rhs = vectors[:, keep].T @ np.broadcast_to(np.asarray(rhs, float), (L.shape[0],))
    estimate = rotated @ beta - rotated_rhs
    q = int(keep.sum())
    if ddf == "kenward-roger":
        return kr_contest(results, rotated, rotated_rhs)
    f = float(np.sum(estimate**2 / d) / q)
    _, nu = satterthwaite_df(results, rotated)
    den = _combined_df(np.asarray(nu))
    return f_table(f, q, den, mean_sq=f * results.sigma**2)

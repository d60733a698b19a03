"""Kenward–Roger tables for a fitted model: adjusted standard errors, df and F tests.

The host side of :mod:`jaxmixed.core._kenward_roger`: the cross-products
``XᵀWX``, ``ZᵀWX``, ``ZᵀWZ`` from the fit's arrays (Z never formed densely:
each row has one entry per random-effect column, accumulated by
``np.bincount``), the variance components τ in pbkrtest's order (per term in
lme4's order, the lower triangle of its covariance matrix column by column,
then σ²), and the compiled adjustment, cached on the results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np
import pandas as pd

from ..core._compile import compiled, unoptimised_on_cpu
from ..core._kenward_roger import MAX_RANDOM_EFFECTS, KRCovariance, KRModel, KRTest, kenward_roger, kr_test
from ._tails import f_table, two_sided_p

if TYPE_CHECKING:
    from ._results import MixedModelResults

__all__ = ["kr_coef_table", "kr_contest", "kr_covariance", "kr_model"]

_jit_kenward_roger = compiled(kenward_roger, compiler_options=unoptimised_on_cpu)
_jit_kr_test = compiled(kr_test, compiler_options=unoptimised_on_cpu)


def _kr_tests(cov: KRCovariance, contrasts: jax.Array, estimates: jax.Array) -> KRTest:
    """:func:`kr_test` of k contrasts (k, l, p) with their estimates (k, l), vmapped."""
    return jax.vmap(kr_test, in_axes=(None, 0, 0))(cov, contrasts, estimates)


_jit_kr_tests = compiled(_kr_tests, compiler_options=unoptimised_on_cpu)


def _offsets(results: MixedModelResults) -> np.ndarray:
    """(F + 1,) where each factor's random effects start, and q last.

    Random effects are ordered factor by factor, level-major within a factor
    (position ``offset_f + level·q_f + column``).
    """
    sizes = [
        info.n_levels * z.shape[1] for info, z in zip(results.design.factors, results.arrays.Z, strict=True)
    ]
    return np.cumsum([0, *sizes])


def _random_columns(results: MixedModelResults) -> tuple[np.ndarray, np.ndarray, int]:
    """Per row, the random-effect positions (n, K) and values (n, K) of Z, and q
    (positions as :func:`_offsets` orders them)."""
    arrays, offsets = results.arrays, _offsets(results)
    index = [
        offsets[f] + np.asarray(codes, np.int64)[:, None] * z.shape[1] + np.arange(z.shape[1])[None, :]
        for f, (codes, z) in enumerate(zip(arrays.codes, arrays.Z, strict=True))
    ]
    values = [np.asarray(z, float) for z in arrays.Z]
    return np.concatenate(index, axis=1), np.concatenate(values, axis=1), int(offsets[-1])


def _cross_products(results: MixedModelResults) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``XᵀWX`` (p, p), ``ZᵀWX`` (q, p), ``ZᵀWZ`` (q, q) in float64."""
    arrays = results.arrays
    x = np.asarray(arrays.X, float)
    w = np.ones(x.shape[0]) if arrays.weights is None else np.asarray(arrays.weights, float)
    idx, val, q = _random_columns(results)
    wval = val * w[:, None]
    pairs = (idx[:, :, None] * q + idx[:, None, :]).ravel()
    ztwz = np.bincount(pairs, (wval[:, :, None] * val[:, None, :]).ravel(), minlength=q * q).reshape(q, q)
    p = x.shape[1]
    rows = (idx[:, :, None] * p + np.arange(p)[None, None, :]).ravel()
    ztwx = np.bincount(rows, (wval[:, :, None] * x[:, None, :]).ravel(), minlength=q * p).reshape(q, p)
    return (x * w[:, None]).T @ x, ztwx, ztwz


def _sigma_index(results: MixedModelResults, q: int) -> tuple[np.ndarray, np.ndarray]:
    """(``sigma_index`` (q, q), τ (k,)): where each entry of Σ sits in τ, and τ.

    τ holds, per term in lme4's order, its covariance matrix's lower
    triangle column by column (σ²Λ_tΛ_tᵀ), then σ².
    """
    design, fit = results.design, results.fit_result
    sigma2 = results.sigma**2
    offsets = _offsets(results)
    slots: dict[tuple[int, int], list[tuple[int, int]]] = {}
    tau: list[float] = []
    for f, t in design.report_order:
        lo, hi = design.factors[f].structure.term_slices[t]
        lam = np.asarray(fit.lambdas[f], float)[lo:hi, lo:hi]
        cov = sigma2 * lam @ lam.T
        for j in range(hi - lo):
            for i in range(j, hi - lo):
                slots.setdefault((f, len(tau)), []).append((lo + i, lo + j))
                tau.append(float(cov[i, j]))
    k = len(tau) + 1
    index = np.full((q, q), k - 1, dtype=np.int32)
    for (f, position), entries in slots.items():
        q_f = np.asarray(fit.lambdas[f]).shape[-1]
        base = offsets[f] + np.arange(design.factors[f].n_levels) * q_f
        for i, j in entries:
            index[base + i, base + j] = position
            index[base + j, base + i] = position
    return index, np.asarray(tau + [sigma2])


def kr_model(results: MixedModelResults) -> KRModel:
    """The :class:`~jaxmixed.core._kenward_roger.KRModel` of a fit (float64 numpy leaves)."""
    q = int(_offsets(results)[-1])
    if q > MAX_RANDOM_EFFECTS:
        raise ValueError(
            f"Kenward-Roger needs dense {q} x {q} matrices (the model's random effects), more than "
            f"the {MAX_RANDOM_EFFECTS} it allows ({q * q * 8 / 2**30:.1f} GiB each): use ddf='satterthwaite'"
        )
    xtwx, ztwx, ztwz = _cross_products(results)
    index, tau = _sigma_index(results, ztwz.shape[0])
    return KRModel(xtwx=xtwx, ztwx=ztwx, ztwz=ztwz, sigma_index=index, tau=tau, n=results.nobs)


def kr_covariance(results: MixedModelResults) -> KRCovariance:
    """Φ, Φ_A, Pᵢ and W of a REML fit (numpy leaves); ML fits are refused as lmerTest refuses them."""
    if not results.reml:
        raise ValueError(
            "Kenward-Roger's method is defined for REML fits; refit with reml=True "
            "(or use ddf='satterthwaite')"
        )
    with jax.enable_x64(True):
        out = _jit_kenward_roger(kr_model(results))
        return jax.tree.map(np.asarray, out)


def kr_coef_table(results: MixedModelResults) -> pd.DataFrame:
    """lmerTest's ``summary(m, ddf = "Kenward-Roger")``: ``Estimate``, ``Std. Error``
    (from Φ_A), ``df`` (KR's, per coefficient), ``t value``, ``Pr(>|t|)``."""
    cov = results._kenward_roger
    beta = results.fixed_effects
    se = np.sqrt(np.diag(cov.vcov_adjusted))
    p = len(beta)
    with jax.enable_x64(True):  # every coefficient's one-row test in one call
        ddf = np.asarray(_jit_kr_tests(cov, np.eye(p)[:, None, :], beta.to_numpy()[:, None]).ddf)
    t = beta.to_numpy() / se
    return pd.DataFrame(
        {"Estimate": beta, "Std. Error": se, "df": ddf, "t value": t, "Pr(>|t|)": two_sided_p(t, ddf)},
        index=beta.index,
    )


def kr_contest(results: MixedModelResults, L: np.ndarray, rhs: np.ndarray) -> pd.DataFrame:
    """lmerTest's ``contest(m, L, ddf = "Kenward-Roger")`` (pbkrtest's ``KRmodcomp``):
    ``F value`` = λ·(L β̂ − rhs)ᵀ(LΦ_ALᵀ)⁻¹(L β̂ − rhs)/l on l and m df; ``Mean Sq`` is the
    unscaled F times σ̂², as lmerTest writes it. ``L`` (l, p) of full row rank."""
    cov = results._kenward_roger
    estimate = L @ results.fixed_effects.to_numpy() - rhs
    with jax.enable_x64(True):
        out = jax.tree.map(np.asarray, _jit_kr_test(cov, L, estimate))
    mean_sq = float(out.f_unscaled) * results.sigma**2
    return f_table(float(out.f_unscaled * out.scale), int(out.q), float(out.ddf), mean_sq=mean_sq)

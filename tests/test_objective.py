"""The segment-sum objective against the dense formula with V built explicitly."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_criterion, dense_v0
from hypothesis import HealthCheck, given, settings
from strategies import data_of, designs, statistics_of, user_lambdas

import jaxmixed as jm
from jaxmixed import core

_objective = eqx.filter_jit(core.objective)
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(design, reml):
    with jax.enable_x64(True):
        stats = statistics_of(design)
        phi = jnp.asarray(design["phi"])
        value = float(_objective(phi, stats, reml))
        lams = user_lambdas(phi, stats)
    expected = dense_criterion(
        design["y"], design["X"], design["codes"], design["Z"], lams, reml, design["weights"]
    )
    assert value == pytest.approx(expected, rel=1e-8)


@SETTINGS
@given(designs(max_factors=1, weighted=True))
def test_one_factor_matches_dense_reml(design):
    _check(design, reml=True)


@SETTINGS
@given(designs(max_factors=1, weighted=True))
def test_one_factor_matches_dense_ml(design):
    _check(design, reml=False)


@SETTINGS
@given(designs(max_factors=3, nested=False, weighted=True))
def test_crossed_factors_match_dense(design):
    _check(design, reml=True)
    _check(design, reml=False)


@SETTINGS
@given(designs(max_factors=3, nested=True))
def test_nested_factors_match_dense(design):
    _check(design, reml=True)
    _check(design, reml=False)


def _statistics_with_cross(design, dense: bool):
    """The design's statistics with Z₁ᵀZ₂ dense (``cross_matrix``) or as sparse pairs,
    whatever ``core._statistics.dense_cross`` would choose (call inside enable_x64)."""
    from jaxmixed.core import _statistics

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_statistics, "DENSE_CROSS_RATIO", 10**9 if dense else 0)
        mp.setattr(_statistics, "DENSE_CROSS_MAX", 10**9 if dense else 0)
        return core.model_statistics(data_of(design), jnp.asarray(design["y"]))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(max_factors=3, nested=False, weighted=True))
def test_dense_and_sparse_cross_blocks_give_the_same_fit(design):
    """Z₁ᵀZ₂ as a dense array (matrix products) or as pairs of non-zeros (gathers): the
    same criterion, gradient in φ, and solution (β̂, vcov, modes and their covariances)."""
    if len(design["codes"]) < 2:
        return
    with jax.enable_x64(True):
        dense, sparse = _statistics_with_cross(design, True), _statistics_with_cross(design, False)
        assert dense.design.cross_matrix is not None and dense.design.pairs is None
        assert sparse.design.cross_matrix is None and sparse.design.pairs is not None
        phi = jnp.asarray(design["phi"])
        value_and_grad = eqx.filter_jit(jax.value_and_grad(lambda f, st: core.objective(f, st, True)))
        values = [value_and_grad(phi, st) for st in (dense, sparse)]
        fits = [jax.tree_util.tree_map(np.asarray, eqx.filter_jit(_solve_at)(phi, st)) for st in (dense, sparse)]
    assert float(values[0][0]) == pytest.approx(float(values[1][0]), rel=1e-10)
    np.testing.assert_allclose(values[0][1], values[1][1], rtol=1e-7, atol=1e-9)
    for a, b in zip(jax.tree_util.tree_leaves(fits[0]), jax.tree_util.tree_leaves(fits[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11)


def _dense_solution(design, lams):
    """β̂, σ̂², vcov, b̂ and conditional covariances from V₀ built explicitly."""
    y, X = design["y"], design["X"]
    n, p = X.shape
    v0_inv = np.linalg.inv(dense_v0(n, design["codes"], design["Z"], lams, design["weights"]))
    beta = np.linalg.solve(X.T @ v0_inv @ X, X.T @ v0_inv @ y)
    resid = y - X @ beta
    sigma2 = resid @ v0_inv @ resid / (n - p)
    vcov = sigma2 * np.linalg.inv(X.T @ v0_inv @ X)
    # b̂ = Λ Λᵀ Zᵀ V₀⁻¹ (y − Xβ̂); Cov(b | y) = σ² Λ (ΛᵀZᵀWZΛ + I)⁻¹ Λᵀ.
    blocks = []
    for c, z, lam in zip(design["codes"], design["Z"], lams, strict=True):
        j, q = int(c.max()) + 1, z.shape[1]
        full = np.zeros((n, j * q))
        full[np.arange(n)[:, None], c[:, None] * q + np.arange(q)[None, :]] = z
        blocks.append((full, np.kron(np.eye(j), lam)))
    zfull = np.concatenate([b[0] for b in blocks], axis=1)
    lam_full = np.zeros((zfull.shape[1], zfull.shape[1]))
    off = 0
    for _, lk in blocks:
        lam_full[off : off + lk.shape[0], off : off + lk.shape[0]] = lk
        off += lk.shape[0]
    w = np.ones(n) if design["weights"] is None else design["weights"]
    zl = zfull @ lam_full
    b_all = lam_full @ lam_full.T @ zfull.T @ v0_inv @ resid
    cov_all = sigma2 * lam_full @ np.linalg.inv(zl.T @ (w[:, None] * zl) + np.eye(zl.shape[1])) @ lam_full.T
    return beta, sigma2, vcov, b_all, cov_all


@SETTINGS
@given(designs(max_factors=3, weighted=True))
def test_solution_matches_dense_gls(design):
    """β̂, σ̂ and the conditional modes against V-based formulas, in user units."""
    with jax.enable_x64(True):
        stats = statistics_of(design)
        phi = jnp.asarray(design["phi"])
        res = jax.tree_util.tree_map(np.asarray, eqx.filter_jit(_solve_at)(phi, stats))
        lams = user_lambdas(phi, stats)
    beta, sigma2, vcov, b_all, cov_all = _dense_solution(design, lams)
    np.testing.assert_allclose(res.beta, beta, rtol=1e-7, atol=1e-9)
    assert float(res.sigma) ** 2 == pytest.approx(sigma2, rel=1e-8)
    np.testing.assert_allclose(res.vcov_beta, vcov, rtol=1e-6, atol=1e-12)
    off = 0
    for b, cov in zip(res.b, res.b_cov, strict=True):
        j, q = b.shape
        np.testing.assert_allclose(b.reshape(-1), b_all[off : off + j * q], rtol=1e-6, atol=1e-9)
        for lv in range(j):
            s = slice(off + lv * q, off + (lv + 1) * q)
            np.testing.assert_allclose(cov[lv], cov_all[s, s], rtol=1e-6, atol=1e-10)
        off += j * q


def _solve_at(phi, stats):
    """The pure fit's map back to user units, at a given φ (no optimisation)."""
    return core.fit_at(stats, phi, core.FitOptions())


def test_dense_block_memory_limit_is_enforced():
    df = jm.load_dataset("Penicillin")
    with pytest.raises(
        MemoryError,
        match=r"dense block of 6 x 6 with \d+ cross pairs: about [0-9.]+ KiB, over the limit of 100 bytes",
    ):
        jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", data=df, memory_limit=100)

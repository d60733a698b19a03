"""The segment-sum objective against the dense formula with V built explicitly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_criterion
from hypothesis import HealthCheck, given, settings
from strategies import designs, statistics_of

import jaxmixed as jm
from jaxmixed._covariance import lambda_from_phi, split_params

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(design, reml):
    with jax.enable_x64(True):
        stats = statistics_of(design)
        phi = jnp.asarray(design["phi"])
        value = float(jm.objective(phi, stats, reml))
        lams = [
            np.asarray(lambda_from_phi(p, s))
            for p, s in zip(split_params(phi, design["structures"]), design["structures"], strict=True)
        ]
    expected = dense_criterion(design["y"], design["X"], design["codes"], design["Z"], lams, reml)
    assert value == pytest.approx(expected, rel=1e-8)


@SETTINGS
@given(designs(max_factors=1))
def test_one_factor_matches_dense_reml(design):
    _check(design, reml=True)


@SETTINGS
@given(designs(max_factors=1))
def test_one_factor_matches_dense_ml(design):
    _check(design, reml=False)


@SETTINGS
@given(designs(max_factors=3, nested=False))
def test_crossed_factors_match_dense(design):
    _check(design, reml=True)
    _check(design, reml=False)


@SETTINGS
@given(designs(max_factors=3, nested=True))
def test_nested_factors_match_dense(design):
    _check(design, reml=True)
    _check(design, reml=False)


@SETTINGS
@given(designs(max_factors=3))
def test_solution_matches_dense_gls(design):
    """β̂, σ̂ and the conditional modes against V-based formulas."""
    with jax.enable_x64(True):
        stats = statistics_of(design)
        phi = jnp.asarray(design["phi"])
        sol = jax.tree_util.tree_map(np.asarray, jm.solve_mixed_model(phi, stats, True))
        lams = [
            np.asarray(lambda_from_phi(p, s))
            for p, s in zip(split_params(phi, design["structures"]), design["structures"], strict=True)
        ]
    y, X = design["y"], design["X"]
    n, p = X.shape
    blocks = []
    for c, z, lam in zip(design["codes"], design["Z"], lams, strict=True):
        j, q = int(c.max()) + 1, z.shape[1]
        full = np.zeros((n, j * q))
        for i in range(n):
            full[i, c[i] * q : (c[i] + 1) * q] = z[i]
        blocks.append((full, np.kron(np.eye(j), lam), j, q))
    zfull = np.concatenate([b[0] for b in blocks], axis=1)
    lam_full = np.zeros((zfull.shape[1], zfull.shape[1]))
    off = 0
    for _, lk, _, _ in blocks:
        k = lk.shape[0]
        lam_full[off : off + k, off : off + k] = lk
        off += k
    zl = zfull @ lam_full
    v0 = zl @ zl.T + np.eye(n)
    v0_inv = np.linalg.inv(v0)
    beta = np.linalg.solve(X.T @ v0_inv @ X, X.T @ v0_inv @ y)
    resid = y - X @ beta
    sigma2 = resid @ v0_inv @ resid / (n - p)
    np.testing.assert_allclose(sol["beta"], beta, rtol=1e-7, atol=1e-9)
    assert float(sol["sigma"]) ** 2 == pytest.approx(sigma2, rel=1e-8)
    np.testing.assert_allclose(
        sol["vcov_beta"], sigma2 * np.linalg.inv(X.T @ v0_inv @ X), rtol=1e-6, atol=1e-12
    )
    # Conditional modes b̂ = Λ Λᵀ Zᵀ V₀⁻¹ (y − Xβ̂) and covariances σ² Λ (ΛᵀZᵀZΛ + I)⁻¹ Λᵀ.
    b_all = lam_full @ lam_full.T @ zfull.T @ v0_inv @ resid
    a_inv = np.linalg.inv(zl.T @ zl + np.eye(zl.shape[1]))
    cov_all = sigma2 * lam_full @ a_inv @ lam_full.T
    off = 0
    for (_, _, j, q), b, cov in zip(blocks, sol["b"], sol["b_cov"], strict=True):
        np.testing.assert_allclose(b.reshape(-1), b_all[off : off + j * q], rtol=1e-6, atol=1e-9)
        for lv in range(j):
            s = slice(off + lv * q, off + (lv + 1) * q)
            np.testing.assert_allclose(cov[lv], cov_all[s, s], rtol=1e-6, atol=1e-10)
        off += j * q


def test_dense_block_memory_limit_is_enforced():
    df = jm.load_dataset("Penicillin")
    with pytest.raises(
        MemoryError,
        match=r"dense block of 6 x 6 with 864 cross pairs: about [0-9.]+ KiB, over the limit of 100 bytes",
    ):
        jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", data=df, memory_limit=100)

"""mixedML's EM formulas (``_em_step``): their fixed point is the ML / REML fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed.core._covariance import structure_for_terms
from jaxmixed.core._em_step import em_step, theta_of

N_GROUPS = 40


@pytest.fixture(scope="module")
def residual_data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(N_GROUPS), rng.integers(5, 15, N_GROUPS))
    x = rng.normal(size=len(g))
    b = rng.normal(size=(N_GROUPS, 2)) * [1.0, 0.6]
    r = 2 + b[g, 0] + b[g, 1] * x + rng.normal(size=len(g))
    return pd.DataFrame({"r": r, "x": x, "g": g})


def _iterate(df, structure, reml, n_steps=4000, padding=0):
    """EM steps from Λ = I, σ² = 1; ``padding`` extra zero rows and empty levels."""
    n = len(df)
    z = np.column_stack([np.ones(n), df.x.to_numpy()])
    pad = lambda a: np.concatenate([a, np.zeros((padding,) + a.shape[1:], a.dtype)])  # noqa: E731
    with jax.enable_x64(True):
        args = (jnp.asarray(pad(df.r.to_numpy())), jnp.asarray(pad(z)), jnp.asarray(pad(df.g.to_numpy())))
        mask = jnp.asarray(np.arange(n + padding) < n)

        def body(_, carry):
            step = em_step(*carry, *args, mask, n_levels=N_GROUPS + padding, structure=structure, reml=reml)
            return step.lam, step.sigma2

        run = jax.jit(lambda: jax.lax.fori_loop(0, n_steps, body, (jnp.eye(2), jnp.asarray(1.0))))
        lam, sigma2 = run()
    return theta_of(lam, structure), float(np.sqrt(sigma2))


@pytest.mark.parametrize(
    ("formula", "sizes", "reml"),
    [
        ("r ~ 1 + (1 + x | g)", [2], True),
        ("r ~ 1 + (1 + x | g)", [2], False),
        ("r ~ 1 + (x || g)", [1, 1], True),
    ],
)
def test_fixed_point_is_the_ml_or_reml_fit(residual_data, formula, sizes, reml):
    ref = jm.fit_reml(formula, residual_data, reml=reml)
    theta, sigma = _iterate(residual_data, structure_for_terms(sizes), reml)
    np.testing.assert_allclose(theta, ref.fit_result.theta, rtol=1e-6, atol=1e-7)
    assert sigma == pytest.approx(ref.sigma, rel=1e-7)


def test_padding_rows_and_empty_levels_change_nothing(residual_data):
    structure = structure_for_terms([2])
    plain = _iterate(residual_data, structure, True, n_steps=50)
    padded = _iterate(residual_data, structure, True, n_steps=50, padding=7)
    np.testing.assert_allclose(padded[0], plain[0], rtol=1e-12)
    assert padded[1] == pytest.approx(plain[1], rel=1e-12)


def test_em_formulas_in_fit_mixed_em(residual_data):
    linear_model = pytest.importorskip("sklearn.linear_model")
    df = residual_data.assign(y=residual_data.r + 0.5 * residual_data.x)
    ref = jm.fit_reml("y ~ x + (1 + x | g)", df)
    fit = jm.fit_mixed_em(
        linear_model.LinearRegression(), "y ~ x + (1 + x | g)", df, variance_update="em", verbose=False
    )
    assert fit.stopped.startswith("converged")
    assert fit.history.objective.isna().all()  # the formulas do not evaluate the criterion
    np.testing.assert_allclose(fit.model.coef_, ref.fixed_effects.iloc[1:], atol=0.05)
    vc, vc_ref = fit.varcorr.vcov.to_numpy(), ref.varcorr.vcov.to_numpy()
    np.testing.assert_allclose(vc, vc_ref, rtol=0.1, atol=0.02)
    with pytest.raises(ValueError, match="one grouping factor"):
        two = df.assign(h=np.arange(len(df)) % 5)
        model = linear_model.LinearRegression()
        jm.fit_mixed_em(model, "y ~ x + (1 | g) + (1 | h)", two, variance_update="em", verbose=False)

"""The optimiser loop: stopping rules, other optax transformations, float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmixed as jm


def test_minimize_quadratic_reports_gradient_stop():
    with jax.enable_x64(True):
        res = jm.minimize(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(4))
    assert int(res.status) == 0
    np.testing.assert_allclose(np.asarray(res.params), 3.0, rtol=1e-8)


def test_iteration_cap_is_reported_not_hidden():
    df = jm.load_dataset("sleepstudy")
    with pytest.warns(jm.ConvergenceWarning, match="iteration limit"):
        res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df, max_iter=2)
    assert not res.converged
    assert res.convergence_message == "iteration limit reached"
    assert res.n_iter == 2
    assert "Converged: NO" in res.summary()


def test_adam_reaches_the_same_optimum():
    df = jm.load_dataset("Dyestuff")
    ref = jm.fit_reml("Yield ~ 1 + (1 | Batch)", data=df)
    res = jm.fit_reml("Yield ~ 1 + (1 | Batch)", data=df, optimizer=optax.adam(0.05), max_iter=3000)
    assert res.objective == pytest.approx(ref.objective, rel=1e-8)


@pytest.mark.parametrize(
    "dataset, formula",
    [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ],
)
def test_float32_is_close_to_float64(dataset, formula):
    df = jm.load_dataset(dataset)
    ref = jm.fit_reml(formula, data=df)
    res = jm.fit_reml(formula, data=df, dtype=jnp.float32)
    assert res.converged
    assert res.objective == pytest.approx(ref.objective, rel=1e-5)
    np.testing.assert_allclose(res.fixed_effects, ref.fixed_effects, rtol=1e-4)
    np.testing.assert_allclose(res.theta, ref.theta, atol=2e-3)


def test_float64_without_touching_global_config():
    jm.fit_reml("Yield ~ 1 + (1 | Batch)", data=jm.load_dataset("Dyestuff"))
    assert not jax.config.jax_enable_x64
    assert jnp.ones(1).dtype == jnp.float32

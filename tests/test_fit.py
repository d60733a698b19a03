"""The optimiser loop: stopping rules, the status enumeration, other optax transformations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmixed as jm
from jaxmixed import core


def test_minimize_quadratic_reports_gradient_stop():
    with jax.enable_x64(True):
        res = core.minimize(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(4))
    assert res.result == jm.RESULTS.successful
    np.testing.assert_allclose(np.asarray(res.params), 3.0, rtol=1e-8)


def test_minimize_with_an_optax_transformation():
    with jax.enable_x64(True):
        res = core.minimize(
            lambda x: jnp.sum((x - 1.0) ** 2),
            jnp.zeros(3),
            core.FitOptions(optimizer=optax.adam(0.1), max_iter=2000),
        )
    assert bool(jm.core.FitResult.converged.fget(_fake(res.result)))
    np.testing.assert_allclose(np.asarray(res.params), 1.0, atol=1e-3)


def _fake(result):
    """A stand-in with a ``result`` field, to read ``converged`` from a RESULTS item."""

    class _R:
        pass

    r = _R()
    r.result = result
    return r


def test_iteration_cap_is_reported_not_hidden():
    df = jm.load_dataset("sleepstudy")
    with pytest.warns(jm.ConvergenceWarning, match="iteration limit") as record:
        res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df, max_iter=2)
    assert {w.filename for w in record} == {__file__}
    assert not res.converged
    assert res.convergence_message == "iteration limit reached"
    assert res.fit_result.result == jm.RESULTS.max_steps_reached
    assert "Converged: NO" in res.summary()


def test_adam_reaches_the_same_optimum():
    df = jm.load_dataset("Dyestuff")
    ref = jm.fit_reml("Yield ~ 1 + (1 | Batch)", data=df)
    res = jm.fit_reml("Yield ~ 1 + (1 | Batch)", data=df, optimizer=optax.adam(0.05), max_iter=3000)
    assert res.objective == pytest.approx(ref.objective, rel=1e-8)


def test_options_carry_every_setting():
    df = jm.load_dataset("sleepstudy")
    ref = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df, reml=False)
    res = jm.fit_reml(
        "Reaction ~ Days + (Days | Subject)",
        data=df,
        options=jm.FitOptions(reml=False, gtol=1e-11, start=jnp.asarray([20.0, -5.0, 5.0])),
    )
    assert not res.reml
    assert res.objective == pytest.approx(ref.objective, rel=1e-10)
    np.testing.assert_allclose(res.theta, ref.theta, atol=1e-5)


def test_constant_response_is_flagged_by_the_pure_fit():
    """The pure fit does not raise (it runs inside vmap): it reports the reason."""
    df = jm.load_dataset("sleepstudy")
    design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", df)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        res = core.fit_data(data, jnp.asarray(3.0 + 2.0 * arrays.X[:, 1]))
    assert res.result == jm.RESULTS.constant_response
    assert not bool(res.converged)
    assert np.isnan(np.asarray(res.theta)).all() and np.isnan(float(res.objective))


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

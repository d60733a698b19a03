"""Jitted and eager evaluations agree; one compiled fit serves new data of the same shapes."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from strategies import designs, statistics_of

import jaxmixed as jm
from jaxmixed import core


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(max_factors=2))
def test_jit_equals_eager(design):
    with jax.enable_x64(True):
        stats = statistics_of(design)
        phi = jnp.asarray(design["phi"])
        for reml in (True, False):
            eager = float(core.objective(phi, stats, reml))
            jitted = float(eqx.filter_jit(core.objective)(phi, stats, reml))
            assert abs(jitted - eager) <= 1e-12 * abs(eager)
        sol_eager = core.solve(phi, stats, True)
        sol_jit = eqx.filter_jit(core.solve)(phi, stats, True)
        for a, b in zip(
            jax.tree_util.tree_leaves(sol_eager), jax.tree_util.tree_leaves(sol_jit), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_fit_jit_equals_eager():
    df = jm.load_dataset("Dyestuff")
    design, arrays = jm.design.build_design("Yield ~ 1 + (1 | Batch)", df)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        y = jnp.asarray(arrays.y)
        eager = core.fit_data(data, y)
        jitted = eqx.filter_jit(core.fit_data)(data, y)
    assert float(eager.objective) == float(jitted.objective) or abs(
        float(eager.objective) - float(jitted.objective)
    ) <= 1e-12 * abs(float(eager.objective))
    np.testing.assert_allclose(np.asarray(eager.theta), np.asarray(jitted.theta), rtol=1e-9)


def test_gradient_through_the_fit_jit_equals_eager():
    """Reverse mode through the whole fit, op by op and compiled (Dyestuff: one scalar
    random effect keeps the eager pass short; test_grad checks the values by refits)."""
    design, arrays = jm.design.build_design("Yield ~ 1 + (1 | Batch)", jm.load_dataset("Dyestuff"))
    options = core.FitOptions(gtol=1e-12)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        y = jnp.asarray(arrays.y)

        def estimates(y):
            fit = core.fit_data(data, y, options)
            return fit.theta.sum() + fit.beta.sum() + fit.sigma

        eager = np.asarray(jax.grad(estimates)(y))
        jitted = np.asarray(jax.jit(jax.grad(estimates))(y))
    assert np.abs(eager).max() > 1e-3  # a derivative that is there
    np.testing.assert_allclose(eager, jitted, rtol=1e-9, atol=1e-12)


def test_fit_is_one_compiled_call_reused_across_data():
    """A second response with the same shapes reuses the compiled fit."""
    df = jm.load_dataset("sleepstudy")
    design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", df)
    fit = eqx.filter_jit(core.fit_data)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        first = fit(data, jnp.asarray(arrays.y))
        compiled = fit._cached._cache_size()
        second = fit(data, jnp.asarray(arrays.y * 2.0))
        assert fit._cached._cache_size() == compiled
    # Scaling y scales σ but leaves θ (relative to σ) unchanged.
    np.testing.assert_allclose(np.asarray(first.theta), np.asarray(second.theta), rtol=1e-7)
    assert float(second.sigma) == np.float64(2.0 * float(first.sigma)) or abs(
        float(second.sigma) - 2.0 * float(first.sigma)
    ) <= 1e-9 * float(second.sigma)

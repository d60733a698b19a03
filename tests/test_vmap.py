"""The objective and the pure fit vmap over parameters and over responses."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmixed as jm
from jaxmixed import core


def _data():
    df = jm.load_dataset("sleepstudy")
    design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", df)
    return jm.design.prepare(design, arrays), arrays


def test_objective_vmaps_over_theta():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        data, arrays = _data()
        stats = core.model_statistics(data, jnp.asarray(arrays.y))
        phis = jnp.asarray(rng.normal(scale=0.5, size=(16, stats.n_params)))
        batched = jax.jit(jax.vmap(lambda p: core.objective(p, stats, True)))(phis)
        # one at a time compiled (op by op the 32 calls took 20 s)
        single = jax.jit(lambda p: core.objective(p, stats, True))
        looped = jnp.stack([single(p) for p in phis])
        np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-12)
        grads = jax.jit(jax.vmap(jax.grad(lambda p: core.objective(p, stats, False))))(phis)
        single_g = jax.jit(jax.grad(lambda p: core.objective(p, stats, False)))
        looped_g = jnp.stack([single_g(p) for p in phis])
        np.testing.assert_allclose(np.asarray(grads), np.asarray(looped_g), rtol=1e-10, atol=1e-10)


def _responses(arrays, k, seed=1):
    """k responses over sleepstudy's design; the last has no subject variation at all
    (its optimum is at the boundary)."""
    rng = np.random.default_rng(seed)
    ys = arrays.y[None, :] + rng.normal(scale=20.0, size=(k, len(arrays.y)))
    ys[-1] = 250.0 + 10.0 * arrays.X[:, 1] + rng.normal(scale=30.0, size=len(arrays.y))
    return ys


@pytest.mark.parametrize("reml", [True, False])
def test_fit_vmaps_over_responses_without_copying_the_design(reml):
    """One vmapped fit over stacked response statistics equals separate fits."""
    options = core.FitOptions(reml=reml)
    with jax.enable_x64(True):
        data, arrays = _data()
        ys = jnp.asarray(_responses(arrays, 5))
        design = eqx.filter_jit(core.design_statistics)(data)

        @eqx.filter_jit
        def many(design, ys):
            def one(y):
                return core.fit(core.ModelStatistics(design, core.response_statistics(design, y)), options)

            return jax.vmap(one)(ys)

        batched = jax.tree.map(np.asarray, many(design, ys))
        single = [jax.tree.map(np.asarray, eqx.filter_jit(core.fit_data)(data, y, options)) for y in ys]
    assert bool(batched.singular[-1]), "the last response should be a boundary fit"
    for k, one in enumerate(single):
        assert batched.objective[k] == pytest.approx(one.objective, rel=1e-10)
        np.testing.assert_allclose(batched.theta[k], one.theta, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(batched.beta[k], one.beta, rtol=1e-8)
        assert bool(batched.singular[k]) == bool(one.singular)
        assert bool(one.converged)

"""Gradients: the objective against finite differences, and through the optimum
(implicit differentiation) against finite differences of refits."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import designs, statistics_of

import jaxmixed as jm
from jaxmixed import core


def _fd_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(max_factors=3, weighted=True))
def test_objective_gradient_matches_finite_differences(design):
    with jax.enable_x64(True):
        stats = statistics_of(design)
        for reml in (True, False):
            f = jax.jit(lambda p, reml=reml: core.objective(p, stats, reml))
            grad = np.asarray(
                jax.jit(jax.grad(lambda p, reml=reml: core.objective(p, stats, reml)))(
                    jnp.asarray(design["phi"])
                )
            )
            fd = _fd_gradient(lambda x, f=f: float(f(jnp.asarray(x))), design["phi"])
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_gradient_at_sleepstudy_optimum_is_small():
    res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=jm.load_dataset("sleepstudy"))
    assert res.converged and res.grad_norm < 1e-6


def _sleepstudy():
    df = jm.load_dataset("sleepstudy")
    design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", df)
    return design, arrays


def _estimates(fit: core.FitResult) -> jax.Array:
    """θ̂, β̂ and σ̂ in one vector."""
    return jnp.concatenate([fit.theta, fit.beta, fit.sigma[None]])


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_gradients_through_the_fit_match_refits(reml):
    """d(θ̂, β̂, σ̂)/dy and d(θ̂, β̂, σ̂)/dX[:, 1] against central differences of refits."""
    design, arrays = _sleepstudy()
    options = core.FitOptions(reml=reml, gtol=1e-12)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        y = jnp.asarray(arrays.y)

        def by_y(y):
            return _estimates(core.fit_data(data, y, options))

        def by_x(col):
            return _estimates(
                core.fit_data(eqx.tree_at(lambda d: d.X, data, data.X.at[:, 1].set(col)), y, options)
            )

        rows = np.array([0, 17, 95, 179])
        for f, at in ((by_y, y), (by_x, data.X[:, 1])):  # eager against jit: test_jit
            f_jit = jax.jit(f)
            jac = np.asarray(jax.jit(jax.jacrev(f))(at))
            for i in rows:
                h = 1e-4 * (1.0 + abs(float(at[i])))
                fd = (np.asarray(f_jit(at.at[i].add(h))) - np.asarray(f_jit(at.at[i].add(-h)))) / (2 * h)
                np.testing.assert_allclose(jac[:, i], fd, rtol=1e-5, atol=1e-8 * np.abs(fd).max())


def test_gradient_at_a_boundary_holds_the_zero():
    """At a boundary the zero stays exactly 0 and the rest differentiates as a refit does."""
    df = jm.load_dataset("Dyestuff2")
    design, arrays = jm.design.build_design("Yield ~ 1 + (1 | Batch)", df)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        y = jnp.asarray(arrays.y)

        def f(y):
            return _estimates(core.fit_data(data, y))

        fit = eqx.filter_jit(core.fit_data)(data, y)
        assert bool(fit.singular)
        jac = np.asarray(jax.jit(jax.jacrev(f))(y))
        assert np.all(jac[0] == 0.0)  # θ held at 0
        f_jit = jax.jit(f)
        h = 1e-5
        fd = (np.asarray(f_jit(y.at[3].add(h))) - np.asarray(f_jit(y.at[3].add(-h)))) / (2 * h)
        np.testing.assert_allclose(jac[:, 3], fd, rtol=1e-6, atol=1e-10)


def test_gradient_with_respect_to_prior_weights_with_two_factors_matches_refits():
    """Weights reach Z's statistics through the pair products of the crossed block."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(12), 6)
    h = rng.integers(0, 5, size=len(g))
    x = rng.normal(size=len(g))
    y = (
        1
        + x
        + rng.normal(size=12)[g]
        + 0.7 * rng.normal(size=12)[g] * x
        + rng.normal(size=5)[h]
        + rng.normal(size=len(g))
    )
    X = np.column_stack([np.ones_like(x), x])
    structures = [core.structure_for_terms([2]), core.structure_for_terms([1])]
    options = core.FitOptions(gtol=1e-12, ftol=1e-16)
    with jax.enable_x64(True):

        def f(w):
            data = core.model_data(
                X, [X, np.ones((len(g), 1))], [g, h], [12, 5], structures, weights=np.ones(len(g))
            )
            data = eqx.tree_at(lambda d: d.weights, data, w)
            return _estimates(core.fit_data(data, jnp.asarray(y), options))

        w = jnp.asarray(rng.uniform(0.5, 2.0, size=len(g)))
        jac = np.asarray(jax.jit(jax.jacrev(f))(w))  # compiled: op by op it took 60 s
        f_jit = jax.jit(f)
        for i in (0, 31, 70):
            # Refits are converged to about 1e-12, so steps below 1e-3 drown in their
            # round-off, while a central difference with h = 1e-3 is off by O(h²)
            # (2e-5 relative, measured): Richardson's combination of h and h/2
            # cancels that term.
            def central(h_, i=i):
                return (np.asarray(f_jit(w.at[i].add(h_))) - np.asarray(f_jit(w.at[i].add(-h_)))) / (2 * h_)

            fd = (4 * central(1e-3) - central(2e-3)) / 3
            # atol relative to the column's largest entry: one small entry (4e-4 of a
            # column up to 1e-2) differs by 9e-9 with the written-out Cholesky (1e-6 of
            # the column's scale), the refits' convergence limit.
            np.testing.assert_allclose(jac[:, i], fd, rtol=1e-5, atol=2e-6 * np.abs(fd).max())

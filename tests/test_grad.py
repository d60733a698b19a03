"""Autodiff gradients of the objective against central finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from strategies import designs, statistics_of

import jaxmixed as jm


def _fd_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(max_factors=3))
def test_gradient_matches_finite_differences(design):
    with jax.enable_x64(True):
        stats = statistics_of(design)
        for reml in (True, False):
            f = jax.jit(lambda p, reml=reml: jm.objective(p, stats, reml))
            grad = np.asarray(
                jax.grad(lambda p, reml=reml: jm.objective(p, stats, reml))(jnp.asarray(design["phi"]))
            )
            fd = _fd_gradient(lambda x, f=f: float(f(jnp.asarray(x))), design["phi"])
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_gradient_at_sleepstudy_optimum_is_small():
    df = jm.load_dataset("sleepstudy")
    res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df)
    design, arrays = jm.build_design("Reaction ~ Days + (Days | Subject)", df)
    with jax.enable_x64(True):
        stats = jm.model_statistics(design, arrays)
        g = jax.grad(lambda p: jm.objective(p, stats, True))(jnp.asarray(res.optimizer_params))
    assert np.max(np.abs(np.asarray(g))) < 1e-5
    assert res.grad_norm < 1e-5

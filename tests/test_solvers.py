"""The solvers as Modules: the shared stopping rule, L-BFGS, optax, jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmixed import core
from jaxmixed.core._solvers import stop_status
from jaxmixed.core._status import LoopStatus


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


X0 = (-1.2, 1.0, -0.5, 0.8)


def _status(value, gmax, prev, it=1, *, max_steps=100, gtol=1e-9, ftol=1e-13, gate=1e3):
    with jax.enable_x64(True):
        grad = jnp.asarray([gmax, 0.0])
        return stop_status(
            jnp.asarray(value), grad, jnp.asarray(prev), it, max_steps=max_steps, gtol=gtol, ftol=ftol, change_gate=gate
        )


def test_stop_rule_precedence():
    assert _status(np.nan, 1.0, 1.0) == LoopStatus.nonfinite
    assert _status(10.0, 1e-9, 10.0, it=100) == LoopStatus.successful  # gradient before step limit
    assert _status(10.0, 1.0, 11.0, it=100) == LoopStatus.max_steps_reached
    assert _status(10.0, 1.0, 11.0) == LoopStatus.running
    assert _status(10.0, 1.0, 10.0) == LoopStatus.no_progress


def test_small_change_stop_is_gated_by_the_gradient():
    """|Δf| tiny but the gradient far above gtol: a slow stretch, not an optimum."""
    scale = 11.0  # 1 + |f|
    tiny = 10.0 + 1e-15
    assert _status(10.0, 10 * 1e-9 * scale, tiny) == LoopStatus.small_change
    assert _status(10.0, 0.9e3 * 1e-9 * scale, tiny) == LoopStatus.small_change
    assert _status(10.0, 1e5 * 1e-9 * scale, tiny) == LoopStatus.running


def test_loose_ftol_still_reaches_the_optimum():
    """With ftol loose (1e-3) L-BFGS stops on a small change only once the gradient
    is within the gate (1e3·gtol): Rosenbrock's minimum (1, 1, 1, 1) to 1e-6."""
    with jax.enable_x64(True):
        res = core.minimize(_rosenbrock, jnp.asarray(X0), core.LBFGS(ftol=1e-3))
        assert bool(core.is_converged(res.result))
        assert float(res.grad_norm) <= 1e3 * 1e-9 * (1 + float(res.value))
    np.testing.assert_allclose(np.asarray(res.params), 1.0, atol=1e-6)


def test_lbfgs_step_limit_and_status():
    with jax.enable_x64(True):
        res = core.minimize(_rosenbrock, jnp.asarray(X0), core.LBFGS(max_steps=3))
    assert res.result == core.RESULTS.max_steps_reached
    assert int(res.n_iter) == 3
    assert not bool(core.is_converged(res.result))


def test_run_false_skips_without_evaluating():
    calls = []

    def fun(x):
        calls.append(1)
        return jnp.sum(x**2)

    with jax.enable_x64(True):
        res = core.LBFGS().minimise(fun, jnp.ones(2), run=False)
    assert bool(res.skipped)
    assert int(res.n_iter) == 0
    np.testing.assert_array_equal(np.asarray(res.params), 1.0)


def test_optax_solver_converges_and_reports():
    with jax.enable_x64(True):
        res = core.minimize(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(3), core.OptaxSolver(optax.adam(0.1), max_steps=2000))
        short = core.minimize(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(3), core.OptaxSolver(optax.adam(0.1), max_steps=5))
    assert bool(core.is_converged(res.result))
    np.testing.assert_allclose(np.asarray(res.params), 1.0, atol=1e-3)
    assert short.result == core.RESULTS.max_steps_reached and int(short.n_iter) == 5


def test_jit_and_vmap_equal_eager():
    solver = core.LBFGS()
    starts = np.asarray([X0, (0.5, 0.5, 0.5, 0.5), (2.0, -1.0, 0.0, 1.0)])
    with jax.enable_x64(True):
        eager = [solver.minimise(_rosenbrock, jnp.asarray(x)) for x in starts]
        batched = jax.jit(jax.vmap(lambda x: solver.minimise(_rosenbrock, x)))(jnp.asarray(starts))
    for k, one in enumerate(eager):
        np.testing.assert_allclose(np.asarray(batched.params[k]), np.asarray(one.params), rtol=1e-12, atol=1e-12)
        assert int(batched.n_iter[k]) == int(one.n_iter)
    assert np.all(np.asarray(core.is_converged(batched.result)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: core.LBFGS(max_steps=-1),
        lambda: core.LBFGS(gtol=-1e-3),
        lambda: core.LBFGS(memory_size=0),
        lambda: core.LBFGS(max_linesearch=0),
        lambda: core.LBFGS(max_step=0.0),
        lambda: core.LBFGS(armijo=0.95),
        lambda: core.LBFGS(change_gate=0.5),
        lambda: core.OptaxSolver("adam"),
    ],
)
def test_solver_settings_are_validated(make):
    with pytest.raises((TypeError, ValueError)):
        make()

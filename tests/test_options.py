"""FitOptions and BoundaryTrials: validation, shorthands, and what they change in a fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmixed as jm
from jaxmixed import core


@pytest.mark.parametrize("reml", ["no", "ML", "False", 1, None, np.float64(1.0)])
def test_reml_must_be_a_bool(reml):
    with pytest.raises(TypeError, match="reml must be True"):
        core.FitOptions(reml=reml)


def test_reml_not_a_bool_is_an_error_in_fit_reml():
    """Tried as a new user would: reml="no" used to fit REML silently."""
    with pytest.raises(TypeError, match="reml"):
        jm.fit_reml("Yield ~ 1 + (1 | Batch)", jm.load_dataset("Dyestuff"), reml="no")


def test_numpy_bools_are_bools():
    assert core.FitOptions(reml=np.bool_(False)).reml == np.False_


def test_shorthands_build_the_solver_and_trials():
    short = core.FitOptions(reml=False, max_iter=200, gtol=1e-11, boundary_screen=3.0, boundary_tol=1e-9)
    assert short.solver == core.LBFGS(max_steps=200, gtol=1e-11)
    assert short.boundary == core.BoundaryTrials(screen=3.0, tol=1e-9)
    assert short.max_iter == 200 and short.optimizer is None
    adam = optax.adam(0.1)
    with_optax = core.FitOptions(optimizer=adam, max_iter=50)
    assert with_optax.solver == core.OptaxSolver(adam, max_steps=50) and with_optax.optimizer is adam
    assert core.FitOptions(boundary=False).boundary is None
    assert core.FitOptions(boundary=True).boundary == core.BoundaryTrials()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"solver": core.LBFGS(), "max_iter": 10},
        {"optimizer": optax.adam(0.1), "memory_size": 5},
        {"boundary": core.BoundaryTrials(), "boundary_screen": 1.0},
        {"boundary": "yes"},
        {"solver": "lbfgs"},
        {"unknown_setting": 1},
        {"boundary": False, "boundary_screen": 3.0},
        {"start": "abc"},
        {"start": [[1.0, 0.0]]},
        {"start": [True, False]},
    ],
)
def test_conflicting_or_unknown_settings_are_errors(kwargs):
    with pytest.raises(TypeError):
        core.FitOptions(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"screen": 0.0}, {"screen": float("inf")}, {"tol": -1.0}, {"solver": core.OptaxSolver(optax.sgd(0.1))}]
)
def test_boundary_trials_are_validated(kwargs):
    with pytest.raises((TypeError, ValueError)):
        core.BoundaryTrials(**kwargs)


def test_trial_solver_follows_the_main_solver():
    lbfgs = core.LBFGS(max_steps=77, memory_size=4)
    assert core.BoundaryTrials().trial_solver(lbfgs) is lbfgs
    adam = core.OptaxSolver(optax.adam(0.1), max_steps=33, gtol=1e-7)
    assert core.BoundaryTrials().trial_solver(adam) == core.LBFGS(max_steps=33, gtol=1e-7)
    own = core.LBFGS(max_steps=5)
    assert core.BoundaryTrials(solver=own).trial_solver(adam) is own


def _dyestuff2_fit(options):
    df = jm.load_dataset("Dyestuff2")
    design, arrays = jm.design.build_design("Yield ~ 1 + (1 | Batch)", df)
    with jax.enable_x64(True):
        return core.fit_data(jm.design.prepare(design, arrays), jnp.asarray(arrays.y), options)


def test_boundary_policy_decides_the_singular_fit():
    """Dyestuff2's batch variance is 0 (lme4: singular); without the trials it stops short of 0."""
    with_trials = _dyestuff2_fit(core.FitOptions())
    without = _dyestuff2_fit(core.FitOptions(boundary=None))
    assert float(with_trials.theta[0]) == 0.0 and bool(with_trials.singular)
    assert not bool(without.singular)
    assert float(without.objective) >= float(with_trials.objective) - 1e-9


def test_options_pass_through_jit_as_static_settings():
    options = core.FitOptions(reml=False, solver=core.LBFGS(max_steps=300))
    leaves = jax.tree.leaves(options)
    assert leaves == []  # every setting is static: a new setting compiles a new program


def test_start_must_be_finite_but_may_be_traced():
    with pytest.raises(ValueError, match="start must be finite"):
        core.FitOptions(start=np.asarray([1.0, np.nan]))
    assert core.FitOptions(start=[1, 0, 1]).start == [1, 0, 1]
    with jax.enable_x64(True):  # built inside a transformation: the values are not known, the shape is
        totals = jax.vmap(lambda s: core.FitOptions(start=s).start.sum())(jnp.ones((3, 2)))
    np.testing.assert_array_equal(np.asarray(totals), 2.0)


@pytest.mark.parametrize("bad", [True, 0, -1, 2.5])
def test_step_limits_are_positive_integers(bad):
    with pytest.raises(ValueError, match="max_steps"):
        core.LBFGS(max_steps=bad)
    with pytest.raises(ValueError, match="max_steps"):
        core.FitOptions(max_iter=bad)


def test_both_solvers_share_the_gate_default():
    """One default, in core/_tolerances: a change there moves both solvers (and the
    Rosenbrock test of tests/test_solvers.py catches a gate that is too wide)."""
    from jaxmixed.core._tolerances import CHANGE_GATE

    assert core.LBFGS().change_gate == CHANGE_GATE == core.OptaxSolver(optax.adam(0.1)).change_gate == 1e3

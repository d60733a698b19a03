"""lme4's ``update``: R's formula rules (``design._update``) and fits made again
(``linear._update``), for linear and generalized fits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GLMM_CBIND, GLMM_GROUP

import jaxmixed as jm
from jaxmixed.design._formula import FormulaError
from jaxmixed.design._update import update_formula

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ("~ .", SLEEP),
        (". ~ .", SLEEP),
        ("~ . + I(Days**2)", "Reaction ~ Days + (Days | Subject) + I(Days**2)"),
        (". ~ . - (Days | Subject) + (1 | Subject)", "Reaction ~ Days + (1 | Subject)"),
        (". ~ . - (Days|Subject)", "Reaction ~ Days"),  # spaces do not matter
        ("log(.) ~ .", "log(Reaction) ~ Days + (Days | Subject)"),
        ("~ . - 1", "Reaction ~ Days + (Days | Subject) - 1"),
        ("~ . + 0", "Reaction ~ Days + (Days | Subject) - 1"),
        ("~ . - Days", "Reaction ~ (Days | Subject)"),
        ("~ . + Days", SLEEP),  # a term already there is not repeated
        ("y ~ x + (1 | g)", "y ~ x + (1 | g)"),  # no dot: the new formula
    ],
)
def test_update_formula_follows_r(new, expected):
    assert update_formula(SLEEP, new) == expected


def test_update_formula_keeps_signs_and_expressions():
    assert update_formula("y ~ x - 1 + (1 | g)", ". ~ . + z") == "y ~ x - 1 + (1 | g) + z"
    assert update_formula("y ~ x - 1 + (1 | g)", ". ~ . + 1") == "y ~ x + (1 | g)"
    assert update_formula("y ~ I(x - 1e-3) + (1 | g)", "~ . + w") == "y ~ I(x - 1e-3) + (1 | g) + w"
    assert update_formula("log(y) ~ x", "sqrt(.) ~ .") == "sqrt((log(y))) ~ x"


def test_update_formula_refuses_a_dot_inside_a_term():
    for new in ("~ .:z", "~ . * z", ". ~ log(.)"):
        with pytest.raises(FormulaError, match="as a term of its own"):
            update_formula("y ~ x + (1 | g)", new)


def test_update_formula_refuses_what_it_cannot_remove():
    with pytest.raises(FormulaError, match="cannot remove 'a'.*write the new formula out"):
        update_formula("y ~ a * b + (1 | g)", ". ~ . - a")  # R would expand a * b first
    with pytest.raises(FormulaError, match="one '~'"):
        update_formula("y ~ x", "~ . ~ z")


@pytest.fixture(scope="module")
def sleep():
    return jm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def fit(sleep):
    return jm.fit_reml(SLEEP, sleep)


def test_update_refits_the_new_formula(fit, sleep):
    smaller = fit.update(". ~ . - (Days | Subject) + (1 | Subject)")
    direct = jm.fit_reml("Reaction ~ Days + (1 | Subject)", sleep)
    assert smaller.formula == "Reaction ~ Days + (1 | Subject)"
    assert smaller.objective == pytest.approx(direct.objective, rel=1e-12)
    assert smaller.objective != pytest.approx(fit.objective, rel=1e-3)


def test_update_replaces_arguments(fit, sleep):
    ml = fit.update(reml=False)
    assert not ml.reml and ml.objective == pytest.approx(jm.fit_reml(SLEEP, sleep, reml=False).objective, rel=1e-12)
    assert fit.update(data=sleep.iloc[:170]).nobs == 170
    weighted = fit.update(data=sleep.assign(w=np.linspace(0.5, 2.0, len(sleep))), weights="w")
    assert weighted.objective != pytest.approx(fit.objective, rel=1e-6)


def test_update_keeps_recorded_options_consistent(sleep):
    tight = jm.fit_reml(SLEEP, sleep, options=jm.FitOptions(solver=jm.LBFGS(gtol=1e-10)))
    ml = tight.update(reml=False)  # the recorded options get the new reml, not a conflict
    assert not ml.reml and ml.options.solver == tight.options.solver
    with pytest.raises(ValueError, match=r"options=FitOptions\(...\), which hold \['max_iter'\]"):
        tight.update(max_iter=1000)
    # new options replace the loose settings recorded beside them (here reml=False)
    ml_loose = jm.fit_reml(SLEEP, sleep, reml=False)
    assert ml_loose.update(options=jm.FitOptions()).reml


def test_update_of_an_array_fit_changes_arrays(sleep):
    X = np.column_stack([np.ones(len(sleep)), sleep["Days"]])
    fit = jm.fit_reml(y=sleep["Reaction"].to_numpy(), X=X, groups=sleep["Subject"].to_numpy())
    doubled = fit.update(y=2.0 * sleep["Reaction"].to_numpy())
    np.testing.assert_allclose(doubled.fixed_effects.to_numpy(), 2.0 * fit.fixed_effects.to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="from arrays"):
        fit.update("~ . + x")


def test_update_errors_name_the_problem(fit, sleep):
    with pytest.raises(ValueError, match=r"no argument\(s\) \['nAGQ'\]"):
        fit.update(nAGQ=2)
    with pytest.raises(ValueError, match="no recorded call"):
        fit.refit(sleep["Reaction"] + 1.0).update(reml=False)


@GLMM_GROUP  # the GLMM tests' worker has cbpp's programs compiled
def test_update_of_a_glmm():
    cbpp = jm.load_dataset("cbpp")
    m = jm.fit_glmm(GLMM_CBIND, cbpp)
    m0 = m.update(". ~ . - period")
    direct = jm.fit_glmm("cbind(incidence, size - incidence) ~ (1 | herd)", cbpp)
    assert m0.loglik == pytest.approx(direct.loglik, rel=1e-9)
    assert jm.anova(m0, m)["Df"].iloc[1] == 3
    reversed_rows = m.update(data=cbpp.iloc[::-1])  # another data argument, the same model
    assert reversed_rows.loglik == pytest.approx(m.loglik, rel=1e-9)


def test_a_pickled_fit_can_still_be_updated(fit):
    import pickle

    again = pickle.loads(pickle.dumps(fit))
    assert again.update(reml=False).objective == pytest.approx(fit.update(reml=False).objective, rel=1e-12)

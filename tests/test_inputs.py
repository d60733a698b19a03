"""The entry points' one validated record (jaxmixed.linear._inputs) and the results' record."""

from __future__ import annotations

import ast
import dataclasses
import warnings
from pathlib import Path
from statistics import NormalDist

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed.core import FitOptions
from jaxmixed.linear import _many_api
from jaxmixed.linear._inputs import Inputs
from jaxmixed.linear._results import MixedModelResults, build_results

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return jm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return jm.fit_reml(FORMULA, sleep)


ENTRY_POINTS = {
    "fit_reml": lambda df, **kw: jm.fit_reml(FORMULA, df, **kw),
    "fit_reml_many": lambda df, **kw: jm.fit_reml_many(FORMULA, df, responses=["Reaction"], **kw),
    "fit_reml_stacked": lambda df, **kw: jm.fit_reml_stacked(FORMULA, [df], **kw),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("reml", ["no", 1, 0, None, 1.0])
def test_reml_must_be_a_bool(sleep, entry, reml):
    """reml="no" once fitted REML silently: any non-bool is a TypeError naming the value."""
    with pytest.raises(TypeError, match=rf"reml must be True .* got {reml!r}"):
        ENTRY_POINTS[entry](sleep, reml=reml)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_settings_are_checked_before_the_design_is_built(sleep, entry):
    """A bad setting is reported even when the data would fail too (nothing is built first)."""
    broken = sleep.drop(columns=["Days"])
    with pytest.raises(TypeError, match="max_iter must be a positive integer, got 2.5"):
        ENTRY_POINTS[entry](broken, max_iter=2.5)
    with pytest.raises(ValueError, match="max_iter must be a positive integer, got 0"):
        ENTRY_POINTS[entry](broken, max_iter=0)
    with pytest.raises(ValueError, match="dtype must be float64 or float32, got float16"):
        ENTRY_POINTS[entry](broken, dtype=np.float16)
    with pytest.raises(TypeError, match="options must be a FitOptions, got dict"):
        ENTRY_POINTS[entry](broken, options={"reml": False})
    with pytest.raises(ValueError, match=r"\['reml'\] given both"):
        ENTRY_POINTS[entry](broken, reml=False, options=FitOptions(reml=True))
    with pytest.raises(TypeError, match="devices"):
        ENTRY_POINTS[entry](broken, devices="gpu")


def test_the_model_source_is_checked(sleep):
    with pytest.raises(ValueError, match=r"not both \(got \['y'\]\)"):
        jm.fit_reml(FORMULA, sleep, y=np.ones(len(sleep)))
    with pytest.raises(ValueError, match="a formula needs data: fit_reml_many"):
        jm.fit_reml_many(FORMULA, responses=["Reaction"])
    with pytest.raises(ValueError, match="a formula needs data: fit_reml_stacked"):
        jm.fit_reml_stacked(FORMULA)
    with pytest.raises(ValueError, match="data was given without a formula"):
        jm.fit_reml(data=sleep, y=sleep.Reaction.to_numpy(), groups=sleep.Subject.to_numpy())
    with pytest.raises(ValueError, match="pass a formula and data, or arrays"):
        jm.fit_reml()
    with pytest.raises(TypeError, match="formula must be a string"):
        jm.fit_reml(["Reaction ~ Days"], sleep)
    with pytest.raises(TypeError, match="weights is the name of a column"):
        jm.fit_reml(FORMULA, sleep, weights=np.ones(len(sleep)))


def test_inputs_resolve_the_settings_once(sleep):
    inputs = Inputs.from_arguments("fit_reml", formula=FORMULA, data=sleep, reml=np.False_, max_iter=7)
    assert inputs.options == FitOptions(reml=False, max_iter=7)
    assert inputs.reml is False and inputs.options.reml is False  # numpy bools become bools
    assert inputs.dtype == np.dtype(np.float64) and inputs.mesh is None
    given = FitOptions(reml=False, max_iter=50)
    same = Inputs.from_arguments("fit_reml", formula=FORMULA, data=sleep, reml=False, options=given)
    assert same.options is given  # arguments that agree with options are not a clash
    f32 = Inputs.from_arguments("fit_reml_many", y=np.ones((4, 2)), dtype=jnp.float32)
    assert f32.dtype == np.dtype(np.float32) and f32.formula is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.missing = "drop"
    design, arrays = inputs.model()
    assert design.formula == FORMULA and len(arrays.y) == len(sleep)


def test_many_api_uses_no_private_name_of_api():
    tree = ast.parse(Path(_many_api.__file__).read_text())
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert "_api" not in modules


def test_results_hold_the_fit_and_derive_the_rest(sleep_fit):
    """Four fields and the call that made them; every scalar is derived, with the types it had as a field."""
    fields = [f.name for f in dataclasses.fields(MixedModelResults)]
    assert fields == ["design", "fit_result", "arrays", "options", "call"]
    fit = sleep_fit.fit_result
    expected = {
        "sigma": float(fit.sigma),
        "objective": float(fit.objective),
        "reml": True,
        "nobs": 180,
        "converged": True,
        "convergence_message": jm.RESULTS[fit.result],
        "singular": False,
        "n_iter": int(fit.n_iter),
        "grad_norm": float(fit.grad_norm),
        "n_dropped_rows": 0,
        "dropped_columns": (),
        "formula": FORMULA,
    }
    for name, value in expected.items():
        got = getattr(sleep_fit, name)
        assert got == value and type(got) is type(value), name
    assert sleep_fit.reml is sleep_fit.options.reml


def test_build_results_takes_options_or_the_reml_setting(sleep_fit):
    args = (sleep_fit.design, sleep_fit.arrays, sleep_fit.fit_result)
    assert build_results(*args, False).options == FitOptions(reml=False)
    assert build_results(*args, False).reml is False
    options = FitOptions(reml=True, max_iter=9)
    assert build_results(*args, options).options is options


def test_wald_intervals_at_any_level(sleep_fit):
    beta, se = sleep_fit.fixed_effects, sleep_fit.fixed_effects_se
    ci = sleep_fit.conf_int(0.8)
    z = NormalDist().inv_cdf(0.9)
    np.testing.assert_array_equal(ci["10%"], beta - z * se)
    np.testing.assert_array_equal(ci["90%"], beta + z * se)
    np.testing.assert_array_equal(sleep_fit.conf_int()["97.5%"], beta + 1.959963984540054 * se)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="level must be in"):
            sleep_fit.conf_int(level)


def test_unseen_level_warnings_point_at_the_caller(sleep, sleep_fit):
    new = sleep.head(3).astype({"Subject": str})
    new.loc[0, "Subject"] = "new subject"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sleep_fit.predict(new)
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(6), 5)
    y = rng.normal(size=30) + rng.normal(size=6)[g]
    fit = jm.fit_reml(y=y, groups=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.predict(X=np.ones(3), groups=np.array([0, 1, 9]))
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]


def test_a_frame_of_responses_still_labels_the_fits(sleep):
    responses = pd.DataFrame({"a": sleep.Reaction, "b": 2 * sleep.Reaction})
    table = jm.fit_reml_many(FORMULA, sleep.drop(columns=["Reaction"]), responses=responses, verbose=False)
    assert list(table.index) == ["a", "b"]
    assert table.result("b").formula == "b ~ Days + (Days | Subject)"

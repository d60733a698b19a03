"""Offsets of linear mixed models (``fit_reml``): ``offset(expr)`` terms and ``offset=``.

Reference: tests/data/offset_reference.json, made by tests/data/offset_reference.R (lme4
1.1-31's lmer on sleepstudy; its header lists the models and fields). lmer fits y − offset
and reports fitted values, ``predict(re.form = NA)`` and predictions with the offset added;
its predict() on new data leaves out the ``offset=`` argument, which jaxmixed evaluates on
new data when it was a column (so the argument models' predictions are lme4's plus the
argument's column). The design layer's own offset functions are tested in test_design.py.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import jaxmixed as jm

REF = json.loads((DATA / "offset_reference.json").read_text())
MODELS = REF["models"]
SLOPES = "Reaction ~ Days + (Days | Subject)"
_FITS: dict = {}


def sleep() -> pd.DataFrame:
    """sleepstudy with the reference script's columns: o = 20√Days, o_na (rows 3, 50 NA)."""
    d = jm.load_dataset("sleepstudy")
    o = 20 * np.sqrt(d["Days"].to_numpy(float))
    o_na = o.copy()
    o_na[[2, 49]] = np.nan
    return d.assign(o=o, o_na=o_na)


def fitted(key: str):
    """The jaxmixed fit of the reference model ``key`` (cached)."""
    if key not in _FITS:
        model = MODELS[key]
        missing = "drop" if key == "na_drop_reml" else "raise"
        _FITS[key] = jm.fit_reml(
            model["formula"], sleep(), reml=model["reml"], offset=model["offset_argument"], missing=missing
        )
    return _FITS[key]


def newdata() -> pd.DataFrame:
    """The reference's new rows: rows 1, 15, 33, 100 of sleepstudy, the last of a new Subject."""
    new = REF["newdata"]
    return pd.DataFrame({"Days": new["Days"], "Subject": new["Subject"], "o": new["o"]})


@pytest.mark.parametrize("key", list(MODELS))
def test_fits_with_offsets_match_lme4(key):
    ref, res = MODELS[key], fitted(key)
    assert res.nobs == ref["nobs"] and res.converged
    # At most 1e-6 relative above lme4's criterion (lower is allowed: lme4 stops at a tolerance).
    assert res.objective <= ref["objective"] * (1 + 1e-6)
    assert res.objective == pytest.approx(ref["objective"], rel=1e-6)
    assert res.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert res.aic == pytest.approx(ref["AIC"], rel=1e-6)
    assert list(res.fixed_effects.index) == ref["fixef"]["names"]
    np.testing.assert_allclose(res.fixed_effects.to_numpy(), ref["fixef"]["values"], rtol=1e-4)
    np.testing.assert_allclose(res.theta.to_numpy(), ref["theta"], rtol=1e-4, atol=1e-6)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    np.testing.assert_allclose(res.offset, ref["offset"], rtol=1e-12, atol=1e-12)  # getME(m, "offset")
    np.testing.assert_allclose(res.fitted, ref["fitted"], rtol=1e-4)
    np.testing.assert_allclose(res.fitted_fixed, ref["fitted_fixed"], rtol=1e-4)
    np.testing.assert_allclose(res.residuals, ref["residuals"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(res.predict(include_random=False), ref["fitted_fixed"], rtol=1e-4)


@pytest.mark.parametrize("key", [k for k in MODELS if "predict_new" in MODELS[k]])
def test_predictions_on_new_data_match_lme4(key):
    """The formula's offset() terms evaluated on the new rows, as lme4 does; the argument's
    column too (lme4 leaves it out: its prediction plus the column); and on the fitted rows
    given as new data, the fitted values."""
    ref, res = MODELS[key], fitted(key)
    argument = np.asarray(ref.get("newdata_argument") or np.zeros(4))
    with pytest.warns(UserWarning, match="1 row"):  # Subject 999 is new
        new = res.predict(newdata())
    np.testing.assert_allclose(new, np.asarray(ref["predict_new"]) + argument, rtol=1e-4)
    fixed = res.predict(newdata(), include_random=False)
    np.testing.assert_allclose(fixed, np.asarray(ref["predict_new_fixed"]) + argument, rtol=1e-4)
    np.testing.assert_allclose(res.predict(sleep()), res.fitted, rtol=1e-12)


def test_an_offset_is_the_fit_of_the_response_less_it():
    """lmer's rule: the fit of y with an offset is the fit of y − offset, its fitted values
    shifted by the offset; by a formula term, the argument (a column, an expression, an
    array) and array input alike."""
    d = sleep()
    shifted = jm.fit_reml(SLOPES, d.assign(Reaction=d["Reaction"] - d["o"]))
    fits = [
        jm.fit_reml(SLOPES + " + offset(o)", d),
        jm.fit_reml(SLOPES, d, offset="o"),
        jm.fit_reml(SLOPES, d, offset="20 * np.sqrt(Days)"),
        jm.fit_reml(SLOPES, d, offset=d["o"].to_numpy()),
        jm.fit_reml(
            y=d["Reaction"].to_numpy(),
            X=np.column_stack([np.ones(len(d)), d["Days"]]),
            Z=np.column_stack([np.ones(len(d)), d["Days"]]),
            groups=d["Subject"].to_numpy(),
            offset=d["o"].to_numpy(),
        ),
    ]
    for res in fits:
        assert res.objective == pytest.approx(shifted.objective, rel=1e-10)
        np.testing.assert_allclose(res.fixed_effects.to_numpy(), shifted.fixed_effects.to_numpy(), rtol=1e-7)
        np.testing.assert_allclose(res.theta.to_numpy(), shifted.theta.to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(res.offset, d["o"], rtol=1e-14)
        np.testing.assert_allclose(res.fitted, shifted.fitted + d["o"], rtol=1e-8)
        np.testing.assert_allclose(res.fitted_fixed, shifted.fitted_fixed + d["o"], rtol=1e-8)
        np.testing.assert_allclose(res.residuals, shifted.residuals, atol=1e-6)
    assert shifted.offset is None


@pytest.fixture(scope="module")
def pair():
    """The model with offset(o) and the fit of Reaction − o without one."""
    d = sleep()
    with_offset = jm.fit_reml(SLOPES + " + offset(o)", d)
    return with_offset, jm.fit_reml(SLOPES, d.assign(Reaction=d["Reaction"] - d["o"]))


def test_simulate_refit_and_inference_use_the_same_model(pair):
    """simulate adds the offset (lme4's simulate draws around predict(re.form = NA)); refit
    keeps it; Satterthwaite's table, the bootstrap and drop1 are those of y − offset."""
    res, shifted = pair
    offset = sleep()["o"].to_numpy()
    np.testing.assert_allclose(res.simulate(3, key=7), shifted.simulate(3, key=7) + offset, rtol=1e-10)
    y = sleep()["Reaction"].to_numpy()
    again = res.refit(y + 10.0)
    assert again.objective == pytest.approx(shifted.refit(y - offset + 10.0).objective, rel=1e-10)
    np.testing.assert_allclose(again.fitted, res.fitted + 10.0, rtol=1e-7)
    pd.testing.assert_frame_equal(res.coef_table(), shifted.coef_table(), rtol=1e-6)
    boot, boot_shifted = (m.bootstrap(8, key=3, verbose=False) for m in (res, shifted))
    pd.testing.assert_frame_equal(boot.replicates, boot_shifted.replicates, rtol=1e-6)
    pd.testing.assert_frame_equal(res.drop1(), shifted.drop1(), rtol=1e-6)


def test_profile_and_power_use_the_same_model(pair):
    """The profile (an ML refit and its re-optimised points) and simulated power (draws
    from the fit, refits, tests) of the model with an offset are those of y − offset."""
    res, shifted = pair
    pd.testing.assert_frame_equal(
        res.conf_int(method="profile"), shifted.conf_int(method="profile"), rtol=1e-6
    )
    power, power_shifted = (m.power("Days", 5.0, n_sim=4, key=1) for m in (res, shifted))
    np.testing.assert_allclose(power.p_values, power_shifted.p_values, rtol=1e-6)


def test_predictions_with_an_array_offset_need_one():
    d = sleep()
    res = jm.fit_reml(SLOPES, d, offset=d["o"].to_numpy())
    with pytest.raises(ValueError, match="fitted with offset= an array"):
        res.predict(d)
    np.testing.assert_allclose(res.predict(d, offset=d["o"].to_numpy()), res.fitted, rtol=1e-12)
    np.testing.assert_allclose(res.predict(d, offset="o"), res.fitted, rtol=1e-12)
    with pytest.raises(ValueError, match="offset= goes with newdata"):
        res.predict(offset=d["o"].to_numpy())
    arrays = jm.fit_reml(y=d["Reaction"].to_numpy(), groups=d["Subject"].to_numpy(), offset=d["o"].to_numpy())
    X = np.ones((len(d), 1))
    with pytest.raises(ValueError, match="fitted with offset= an array"):
        arrays.predict(X=X, groups=d["Subject"].to_numpy())
    np.testing.assert_allclose(
        arrays.predict(X=X, groups=d["Subject"].to_numpy(), offset=d["o"].to_numpy()),
        arrays.fitted,
        rtol=1e-12,
    )
    with pytest.raises(TypeError, match="not a column name"):
        jm.fit_reml(y=d["Reaction"].to_numpy(), groups=d["Subject"].to_numpy(), offset="o")


def test_missing_offsets_are_dropped_or_refused_as_other_columns():
    """A row whose offset reads a missing value: an error naming the column (missing="raise"),
    or dropped (missing="drop", lme4's na.omit: the na_drop_reml reference); an array
    offset's NaN likewise; a non-finite offset made by a transformation is an error."""
    d = sleep()
    with pytest.raises(ValueError, match=r"missing or non-finite values in used column\(s\) \('o_na': 2 row"):
        jm.fit_reml(SLOPES + " + offset(o_na)", d)
    with pytest.raises(ValueError, match="'o_na': 2 row"):
        jm.fit_reml(SLOPES, d, offset="o_na")
    by_argument = jm.fit_reml(SLOPES, d, offset="o_na", missing="drop")
    assert by_argument.n_dropped_rows == 2
    assert by_argument.objective == pytest.approx(MODELS["na_drop_reml"]["objective"], rel=1e-6)
    array = d["o_na"].to_numpy()
    with pytest.raises(ValueError, match=r"'\(offset\)': 2 row"):
        jm.fit_reml(SLOPES, d, offset=array)
    assert jm.fit_reml(SLOPES, d, offset=array, missing="drop").objective == pytest.approx(
        by_argument.objective, rel=1e-10
    )
    y, groups = d["Reaction"].to_numpy(), d["Subject"].to_numpy()
    with pytest.raises(ValueError, match="offset: 2"):
        jm.fit_reml(y=y, groups=groups, offset=array)
    assert jm.fit_reml(y=y, groups=groups, offset=array, missing="drop").nobs == 178
    with pytest.raises(ValueError, match=r"offset\(log\(Days\)\) has 18 missing or non-finite"):
        jm.fit_reml(SLOPES + " + offset(log(Days))", d)
    with pytest.raises(ValueError, match=r"offset must have one value per row \(180\)"):
        jm.fit_reml(SLOPES, d, offset=np.zeros(5))
    with pytest.raises(ValueError, match=r"column\(s\) \['nope'\]"):
        jm.fit_reml(SLOPES + " + offset(nope)", d)


def test_offsets_are_refused_where_they_are_not_supported():
    """fit_reml_many, fit_reml_stacked and the networks' fits take no offsets yet: an
    offset() term is an error that says so, never a column named offset nor left out."""
    d = sleep()
    formula = SLOPES + " + offset(o)"
    with pytest.raises(ValueError, match="fit_reml_many does not support offsets"):
        jm.fit_reml_many(formula, d, responses=["Reaction"], verbose=False)
    with pytest.raises(ValueError, match="fit_reml_stacked does not support offsets"):
        jm.fit_reml_stacked(formula, [d, d], verbose=False)
    with pytest.raises(ValueError, match="offsets .* are not supported by this fit"):
        jm.fit_mixed_em(
            object_with_fit_predict(), "Reaction ~ Days + offset(o) + (1 | Subject)", d, verbose=False
        )
    with pytest.raises(ValueError, match="offsets .* are not supported by this fit"):
        jm.design.build_design(formula, d)


def object_with_fit_predict():
    """A regressor that the EM fit accepts (it is refused before any fitting)."""

    class Mean:
        def fit(self, x, y):
            self.mean = float(np.mean(y))
            return self

        def predict(self, x):
            return np.full(len(x), self.mean)

    return Mean()


def test_a_model_without_offsets_reports_none():
    res = jm.fit_reml(SLOPES, sleep())
    assert res.offset is None
    assert not res.design.offsets.given
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(res.predict(sleep()), res.fitted, rtol=1e-12)

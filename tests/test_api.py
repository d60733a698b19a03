"""fit_reml against lme4's fits of its own example datasets (tests/data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import jaxmixed as jm
from jaxmixed._datasets import REFERENCE_MODELS

CASES = REFERENCE_MODELS  # the models of tests/data/lme4_reference.json, in its order

_FITS: dict = {}


def fitted(key: str):
    if key not in _FITS:
        case = next(c for c in CASES if c.key == key)
        _FITS[key] = jm.fit_reml(case.formula, data=jm.load_dataset(case.dataset), reml=case.reml)
    return _FITS[key]


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("key", [c.key for c in CASES])
def test_objective_matches_lme4(key, lme4_refs):
    ref, res = lme4_refs[key], fitted(key)
    target = ref["deviance_or_REMLcrit"]
    # At most 1e-6 relative above lme4 (lme4 stops at a tolerance: lower is allowed).
    assert res.objective <= target * (1 + 1e-6)
    assert rel(res.objective, target) < 1e-6
    assert res.converged
    assert res.nobs == ref["nobs"]
    assert rel(res.loglik, ref["logLik"]) < 1e-6
    assert rel(res.aic, ref["AIC"]) < 1e-6
    assert rel(res.bic, ref["BIC"]) < 1e-6
    assert res.singular == ref["singular"]


@pytest.mark.parametrize("key", [c.key for c in CASES])
def test_parameters_match_lme4(key, lme4_refs):
    ref, res = lme4_refs[key], fitted(key)
    for name, value in ref["fixef"].items():
        assert rel(res.fixed_effects[name], value) < 1e-4, name
    for name, value in ref["se"].items():
        assert rel(res.fixed_effects_se[name], value) < 1e-4, name
    assert rel(res.sigma, ref["sigma"]) < 1e-4
    vc = res.varcorr
    assert len(vc) == len(ref["varcorr"])
    for row, ref_row in zip(vc.itertuples(), ref["varcorr"], strict=True):
        assert row.grp == ref_row["grp"]
        for mine, theirs in ((row.var1, ref_row["var1"]), (row.var2, ref_row["var2"])):
            if theirs is None:
                assert mine is None or mine != mine  # None or NaN
            else:
                assert mine == theirs
        for field in ("vcov", "sdcor"):
            theirs = ref_row[field]
            if theirs == 0:
                assert getattr(row, field) == 0.0  # boundary: exactly zero
            else:
                assert rel(getattr(row, field), theirs) < 1e-4, (row, field)
    theta_ref = np.array(list(ref["theta"].values()))
    if all("[" not in name for name in res.theta.index):  # formulaic's categorical names differ
        assert list(res.theta.index) == list(ref["theta"]), "θ names are lme4's"
    np.testing.assert_allclose(res.theta.to_numpy(), theta_ref, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("key", [c.key for c in CASES])
def test_conditional_modes_match_lme4(key, lme4_refs):
    ref, res = lme4_refs[key], fitted(key)
    assert set(res.random_effects) == set(ref["ranef"])
    for factor, rows in ref["ranef"].items():
        mine = res.random_effects[factor]
        for col in rows[0]:
            if col.startswith(".") or col.startswith("_"):
                continue
            theirs = np.array([r[col] for r in rows])
            levels = [r[".level"] for r in rows]
            values = mine.loc[[_level(mine.index, lv) for lv in levels], col].to_numpy()
            scale = max(np.std(theirs), 1e-12)
            np.testing.assert_allclose(values, theirs, rtol=1e-3, atol=1e-3 * scale)


def _level(index, label: str):
    """The index entry whose string form is lme4's level label."""
    as_str = index.astype(str)
    return index[list(as_str).index(label)]


def test_singular_fit_reports_exact_zero():
    res = fitted("dyestuff2_reml_singular")
    assert res.singular
    assert res.theta.iloc[0] == 0.0
    assert res.varcorr.vcov.iloc[0] == 0.0
    assert np.all(res.random_effects["Batch"].to_numpy() == 0.0)
    assert "singular" in res.summary()


def test_formula_and_array_fits_agree():
    df = jm.load_dataset("sleepstudy")
    by_formula = fitted("sleepstudy_slopes_reml")
    X = np.column_stack([np.ones(len(df)), df.Days.to_numpy(float)])
    by_arrays = jm.fit_reml(y=df.Reaction.to_numpy(), X=X, Z=X, groups=df.Subject.astype(str).to_numpy())
    assert by_arrays.objective == pytest.approx(by_formula.objective, rel=1e-10)
    np.testing.assert_allclose(
        by_arrays.fixed_effects.to_numpy(), by_formula.fixed_effects.to_numpy(), rtol=1e-8
    )
    np.testing.assert_allclose(
        by_arrays.predict(X=X, Z=X, groups=df.Subject.astype(str).to_numpy()), by_formula.fitted, rtol=1e-8
    )


def _extra_data(name: str):
    if name == "nlschools":
        return jm.load_dataset("nlschools")
    if name == "insteval_first300":
        factors = {c: str for c in ("s", "d", "dept", "service")}
        return pd.read_csv(DATA / "insteval_first300.csv", dtype=factors)
    df = jm.load_dataset("sleepstudy")
    df["DaysF"] = df.Days.astype(str)
    df["w"] = np.arange(len(df)) % 7 - 3.0
    df["ph"] = np.where(df.Days < 5, "a", "b")
    return df


EXTRA = [
    "nlschools_slopes_reml",
    "nlschools_slopes_ml",
    "insteval300_dense_slopes_reml",
    "sleepstudy_term_order_reml",
    "sleepstudy_uncorr_factor_reml",
]


@pytest.mark.parametrize("key", EXTRA)
def test_extra_models_match_tightly_converged_lme4(key):
    """Slopes on a crossed (dense) factor, lme4's term order with ties, (f || g)
    with a categorical f, and a model lme4's default optimiser stops short on
    (nlschools): against lme4 run with a tight tolerance (tests/data)."""
    ref = json.loads((DATA / "extra_reference.json").read_text())[key]
    res = jm.fit_reml(ref["formula"], data=_extra_data(ref["data"]), reml=ref["REML"])
    assert res.converged
    assert res.nobs == ref["nobs"]
    assert res.objective <= ref["objective"] * (1 + 1e-6)
    assert rel(res.objective, ref["objective"]) < 1e-6
    for name, value in ref["fixef"].items():
        # Relative to the estimate, or for an estimate near 0 to its standard error.
        diff = abs(res.fixed_effects[name] - value)
        assert diff <= 1e-4 * max(abs(value), ref["se"][name]), name
        assert rel(res.fixed_effects_se[name], ref["se"][name]) < 1e-4, name
    assert len(res.theta) == len(ref["theta"])
    # (ph || Subject) = (1 | Subject) + (0 + ph | Subject) is over-parameterised
    # (the intercept is the sum of the two dummies): θ lies on a ridge of equal
    # criterion, so only the criterion, β̂ and the table's layout are comparable.
    identifiable = key != "sleepstudy_uncorr_factor_reml"
    if identifiable:
        np.testing.assert_allclose(res.theta.to_numpy(), list(ref["theta"].values()), rtol=1e-4, atol=2e-5)
    residual_var = ref["sigma"] ** 2
    assert len(res.varcorr) == len(ref["varcorr"])
    for row, ref_row in zip(res.varcorr.itertuples(), ref["varcorr"], strict=True):
        assert row.grp == ref_row["grp"]
        assert row.var1 == ref_row["var1"]
        assert row.var2 == ref_row["var2"]
        if (
            identifiable and ref_row["var2"] is None
        ):  # variances (covariances at a boundary are ill-determined)
            assert abs(row.vcov - ref_row["vcov"]) <= 1e-4 * abs(ref_row["vcov"]) + 1e-4 * residual_var
            if ref_row["vcov"] == 0:
                assert row.vcov == 0.0


# lme4's fits with prior weights w = 1 + (Days mod 3)/2, from tests/data/weights_reference.R
# (R 4.2.2, lme4 1.1-31, bobyqa at rhoend = 1e-12).
WEIGHTED_LME4 = {
    True: (
        1733.6835621509,
        [0.88421664, -0.00803750, 0.21769138],
        [250.48833663, 10.59781481],
        28.9505656331,
    ),
    False: (
        1742.1065713396,
        [0.85097813, -0.00520036, 0.21044803],
        [250.48833663, 10.59781481],
        28.9505658365,
    ),
}


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_prior_weights_match_lme4(reml):
    df = jm.load_dataset("sleepstudy").assign(w=lambda d: 1 + (d.Days % 3) * 0.5)
    objective, theta, fixef, sigma = WEIGHTED_LME4[reml]
    res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df, reml=reml, weights="w")
    assert res.objective == pytest.approx(objective, rel=1e-9)
    np.testing.assert_allclose(res.theta.to_numpy(), theta, atol=1e-4)
    np.testing.assert_allclose(res.fixed_effects.to_numpy(), fixef, rtol=1e-7)
    assert res.sigma == pytest.approx(sigma, rel=1e-5)
    by_arrays = jm.fit_reml(
        y=df.Reaction.to_numpy(),
        X=np.column_stack([np.ones(len(df)), df.Days]),
        Z=np.column_stack([np.ones(len(df)), df.Days]),
        groups=df.Subject.to_numpy(),
        weights=df.w.to_numpy(),
        reml=reml,
    )
    assert by_arrays.objective == pytest.approx(res.objective, rel=1e-10)


def test_bad_weights_are_an_error_naming_them():
    df = jm.load_dataset("sleepstudy").assign(w=lambda d: d.Days - 1.0)
    with pytest.raises(ValueError, match=r"prior weights 'w' must be positive and finite; 36 row"):
        jm.fit_reml("Reaction ~ Days + (1 | Subject)", data=df, weights="w")
    with pytest.raises(ValueError, match="weights column 'nope' is not in the data"):
        jm.fit_reml("Reaction ~ Days + (1 | Subject)", data=df, weights="nope")

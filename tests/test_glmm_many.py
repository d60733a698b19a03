"""fit_glmm_many: many responses over one design as one vmapped computation, against
separate fit_glmm calls (themselves tested against lme4 in test_glmm_api.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, GLMM_GROUP

import jaxmixed as jm
from jaxmixed.glmm._separation import SeparationWarning

K = 4
pytestmark = GLMM_GROUP


@pytest.fixture(scope="module")
def frame():
    """cbpp's design (period a factor, herds) with K simulated binomial responses."""
    df = pd.read_csv(DATA / "cbpp.csv").assign(period=lambda d: d["period"].astype(str))
    rng = np.random.default_rng(5)
    codes = pd.factorize(df["herd"].astype(str), sort=True)[0]
    herd = rng.normal(scale=0.8, size=(K, codes.max() + 1))
    p = 1.0 / (1.0 + np.exp(1.4 - herd[:, codes]))
    for k in range(K):
        df[f"y{k}"] = rng.binomial(df["size"].to_numpy(), p[k]) / df["size"]
    return df


@pytest.fixture(scope="module")
def table(frame):
    extra = frame.assign(missing=frame["y0"].where(frame.index != 3), half=0.5, const=0.0)
    names = [f"y{k}" for k in range(K)] + ["missing", "half", "const"]
    # batch_size 3: three chunks, the last filled up, unfittable responses replaced
    return jm.fit_glmm_many("y ~ period + (1 | herd)", extra, names, "binomial", weights="size", batch_size=3)


def test_each_row_is_the_separate_fit(frame, table):
    for k in (0, 3):
        one = jm.fit_glmm(f"cbind(y{k} * size, (1 - y{k}) * size) ~ period + (1 | herd)", frame, "binomial")
        row = table.loc[f"y{k}"]
        assert row["converged"] and row["deviance"] == pytest.approx(-2 * one.loglik, rel=1e-10)
        np.testing.assert_allclose(row[list(one.fixef.index)].to_numpy(float), one.fixef, rtol=1e-7, atol=1e-10)
        se = one.coef_table()["Std. Error"]
        np.testing.assert_allclose(row[[f"se_{c}" for c in se.index]].to_numpy(float), se, rtol=1e-6)
        assert row["theta_herd.(Intercept)"] == pytest.approx(float(one.theta.iloc[0]), rel=1e-7)


def test_unfittable_responses_say_why_and_hold_nan(table):
    assert table.loc["missing", "message"] == "not fitted: the response has 1 missing or non-finite value(s)"
    assert "whole numbers" in table.loc["half", "message"]  # 0.5 × an odd number of trials
    assert table.loc["const", "message"].startswith("not fitted: every response is 0")
    for name in ("missing", "half", "const"):
        assert not table.loc[name, "converged"] and np.isnan(table.loc[name, "deviance"])
        with pytest.raises(ValueError, match="was not fitted"):
            table.result(name)


def test_result_gives_the_whole_fit(frame, table):
    fit = table.result("y1")
    one = jm.fit_glmm("y1 ~ period + (1 | herd)", frame, "binomial", weights="size")
    assert fit.loglik == pytest.approx(one.loglik, rel=1e-10)
    pd.testing.assert_frame_equal(fit.coef_table(), one.coef_table(), rtol=1e-6)
    assert "y1 ~ period + (1 | herd)" in fit.summary()


def test_separated_responses_are_named_and_warned(frame, table):
    """A response with no successes in period 4 (quasi-complete separation of period4) is
    fitted, named in the separated column and counted in one SeparationWarning; the others
    (certified from their fits' means) are not, and result(k) carries the names."""
    assert (table["separated"] == "").all()
    sep = frame.assign(y_sep=np.where(frame["period"] == "4", 0.0, frame["y0"]))
    with pytest.warns(SeparationWarning, match="1 of 2 responses have complete or quasi-complete separation"):
        both = jm.fit_glmm_many("y ~ period + (1 | herd)", sep, ["y_sep", "y1"], "binomial", weights="size")
    assert both.loc["y_sep", "separated"] == "period4" and both.loc["y1", "separated"] == ""
    assert both.result("y_sep").separated == ("period4",) and both.result("y1").separated == ()


def test_bad_arguments_are_named(frame):
    with pytest.raises(ValueError, match="not in the data"):
        jm.fit_glmm_many("y ~ period + (1 | herd)", frame, ["nope"], weights="size")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        jm.fit_glmm_many("y ~ period + (1 | herd)", frame, ["y0"], weights="size", batch_size=0)

"""Names as lme4 writes them, the fixed part's terms, lmerTest's ``anova`` and lme4's ``drop1``.

References: ``tests/data/anova_reference.json``, written by
``tests/data/anova_reference.R`` (lmerTest 3.1-3, lme4 1.1-31).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import jaxmixed as jm
from jaxmixed.design import build_design, design_from_arrays
from jaxmixed.design._names import parameter_names
from jaxmixed.design._rnames import python_powers, r_spelling
from jaxmixed.linear._terms_anova import doolittle, droppable_terms, term_hypotheses

MODELS = {
    "cake": ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)"),
    "nlschools": ("nlschools", "lang ~ IQ * COMB + I(IQ^2) + (1 | class)"),
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
}


@pytest.fixture(scope="module")
def refs() -> dict:
    return json.loads((DATA / "anova_reference.json").read_text())


@pytest.fixture(scope="module")
def fits() -> dict:
    return {key: jm.fit_reml(formula, jm.load_dataset(name)) for key, (name, formula) in MODELS.items()}


def _table(ref: dict) -> pd.DataFrame:
    return pd.DataFrame(ref["columns"], index=ref["terms"]).astype(float)


def _max_rel(mine: pd.Series, theirs: pd.Series) -> float:
    return float(((mine - theirs).abs() / theirs.abs()).max())


# ------------------------------------------------------------------- names


@pytest.mark.parametrize("key", list(MODELS))
def test_fixed_effect_names_are_lme4s(key, refs, fits):
    fit = fits[key]
    names = refs[key]["fixef"]["names"]
    assert list(fit.fixed_effects.index) == names
    assert list(fit.vcov.index) == names and list(fit.vcov.columns) == names
    assert list(fit.coef_table().index) == names
    assert list(fit.conf_int().index) == names
    np.testing.assert_allclose(fit.fixed_effects.to_numpy(), refs[key]["fixef"]["values"], rtol=1e-5, atol=1e-6)


def test_renamed_columns_still_predict_new_data(fits):
    cake = jm.load_dataset("cake")
    fit = fits["cake"]
    np.testing.assert_allclose(fit.predict(cake.iloc[:7]), fit.fitted[:7], rtol=1e-10)
    nl = jm.load_dataset("nlschools")
    np.testing.assert_allclose(fits["nlschools"].predict(nl.iloc[:7]), fits["nlschools"].fitted[:7], rtol=1e-10)


def test_r_spelling_of_formulaic_names():
    assert r_spelling("Intercept") == "(Intercept)"
    assert r_spelling("recipe[T.B]:temperature[T.185]") == "recipeB:temperature185"
    assert r_spelling("C(x)[T.b]") == "C(x)b"
    assert r_spelling("ph[a]") == "pha"
    assert r_spelling("I(IQ ** 2)") == "I(IQ^2)"
    assert r_spelling("np.log(x / 2)") == "np.log(x/2)"
    assert r_spelling("C(x, contr.poly)[.L]") == "C(x, contr.poly).L"
    assert r_spelling("C(x, levels=['a:b', 'c'])[T.c]") == "C(x, levels=['a:b', 'c'])c"


def test_power_inside_calls_is_a_power_not_xor():
    """``I(x^2)`` in R is x squared; Python's ``^`` (XOR) would give 3 for x = 1, 0 for 2."""
    assert python_powers("I(x^2) + np.log((x + 1)^2) + (a + b)^2") == "I(x**2) + np.log((x + 1)**2) + (a + b)^2"
    assert python_powers('I("^") + x') == 'I("^") + x'
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": np.tile(np.arange(1, 6), 8), "g": np.repeat(np.arange(8), 5)})
    df["y"] = 0.3 * df.x**2 + rng.normal(size=len(df)) + rng.normal(size=8)[df.g]
    design, arrays = build_design("y ~ x + I(x^2) + (1 | g)", df)
    assert design.fixed_names == ("(Intercept)", "x", "I(x^2)")
    np.testing.assert_array_equal(arrays.X[:, 2], df.x.to_numpy() ** 2)
    spaced, _ = build_design("y ~ x + I(x ** 2) + (1 | g)", df)
    assert spaced.fixed_names == design.fixed_names
    fit = jm.fit_reml("y ~ x + I(x^2) + (1 | g)", df)
    np.testing.assert_allclose(fit.predict(df.iloc[:5]), fit.fitted[:5], rtol=1e-10)


def test_random_effect_names_are_lme4s():
    design, _ = build_design("lang ~ IQ + (COMB | class)", jm.load_dataset("nlschools"))
    assert design.factors[0].term_columns == (("(Intercept)", "COMB1"),)
    assert parameter_names(design) == [
        "sd_(Intercept)|class",
        "sd_COMB1|class",
        "cor_COMB1.(Intercept)|class",
        "sigma",
    ]


def test_array_input_keeps_its_names():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"Intercept": np.ones(20), "x[T.b]": rng.normal(size=20)})
    design, _ = design_from_arrays(y=rng.normal(size=20), X=X, groups=np.repeat(np.arange(4), 5))
    assert design.fixed_names == ("Intercept", "x[T.b]")
    assert [(t.label, t.columns) for t in design.fixed_terms] == [("Intercept", (0,)), ("x[T.b]", (1,))]


# ------------------------------------------------------------------- terms


def test_terms_of_the_formulaic_builder():
    design, _ = build_design(MODELS["nlschools"][1], jm.load_dataset("nlschools"))
    terms = {t.label: t for t in design.fixed_terms}
    assert list(terms) == ["(Intercept)", "IQ", "COMB", "I(IQ^2)", "IQ:COMB"]
    assert [terms[k].columns for k in terms] == [(0,), (1,), (2,), (3,), (4,)]
    assert terms["IQ:COMB"].factors == ("IQ", "COMB") and terms["IQ:COMB"].numeric == (True, False)
    assert terms["I(IQ^2)"].numeric == (True,)
    assert [t.label for t in droppable_terms(design)] == ["I(IQ^2)", "IQ:COMB"]
    design, _ = build_design(MODELS["cake"][1], jm.load_dataset("cake"))
    assert [(t.label, len(t.columns)) for t in design.fixed_terms] == [
        ("(Intercept)", 1),
        ("recipe", 2),
        ("temperature", 5),
        ("recipe:temperature", 10),
    ]


def test_terms_of_the_numeric_builder_and_aliased_columns():
    sleep = jm.load_dataset("sleepstudy").assign(Days2=lambda d: 2.0 * d.Days + 1.0)
    with pytest.warns(UserWarning, match="rank deficient"):
        design, _ = build_design("Reaction ~ Days + Days2 + (1 | Subject)", sleep)
    assert [(t.label, t.columns) for t in design.fixed_terms] == [("(Intercept)", (0,)), ("Days", (1,)), ("Days2", ())]


def test_doolittle_factors_a_symmetric_matrix():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(6, 4))
    xtx = a.T @ a
    lower = doolittle(xtx)
    upper = np.linalg.solve(lower, xtx)
    np.testing.assert_allclose(np.tril(upper, -1), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.diag(lower), 1.0)


# ------------------------------------------------------------------- anova


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("type_", [3, 1])
def test_anova_matches_lmertest(key, type_, refs, fits):
    mine, theirs = fits[key].anova(type=type_), _table(refs[key][f"anova_type{type_}"])
    assert list(mine.index) == list(theirs.index)
    assert list(mine.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    np.testing.assert_array_equal(mine["NumDF"], theirs["NumDF"])
    assert _max_rel(mine["F value"], theirs["F value"]) < 1e-4
    assert _max_rel(mine["Sum Sq"], theirs["Sum Sq"]) < 1e-4
    assert _max_rel(mine["DenDF"], theirs["DenDF"]) < 1e-3
    np.testing.assert_allclose(mine["Pr(>F)"], theirs["Pr(>F)"], rtol=1e-4, atol=1e-12)


def test_type3_does_not_depend_on_the_contrast_coding(fits):
    """Other reference levels (and sum contrasts) give the same type III table; the
    F test of the treatment-coded recipe coefficients (a simple effect at the
    reference temperature) differs."""
    cake, formula = jm.load_dataset("cake"), MODELS["cake"][1]
    temps = list(cake.temperature.cat.categories)
    permuted = cake.assign(
        recipe=cake.recipe.cat.reorder_categories(["C", "A", "B"]),
        temperature=cake.temperature.cat.reorder_categories(temps[::-1]),
    )
    base, other = fits["cake"], jm.fit_reml(formula, permuted)
    assert list(other.fixed_effects.index)[:3] == ["(Intercept)", "recipeA", "recipeB"]
    summed = jm.fit_reml(
        "angle ~ C(recipe, contr.sum) * C(temperature, contr.sum) + (1 | recipe:replicate)", cake
    )
    mine = base.anova()
    for alt in (other.anova(), summed.anova()):
        np.testing.assert_allclose(alt.to_numpy(), mine.to_numpy(), rtol=1e-5)
    simple = [fit.contest(np.eye(18)[[1, 2]])["F value"].iloc[0] for fit in (base, other)]
    assert abs(simple[0] - simple[1]) > 0.1 * simple[0]
    hypotheses = term_hypotheses(base.design, base.arrays.X, 3)
    assert {k: v.shape for k, v in hypotheses.items()} == {
        "recipe": (2, 18),
        "temperature": (5, 18),
        "recipe:temperature": (10, 18),
    }


def test_anova_rejects_unknown_settings(fits):
    with pytest.raises(ValueError, match="type must be one of"):
        fits["sleepstudy"].anova(type=2)
    with pytest.raises(ValueError, match="ddf must be one of"):
        fits["sleepstudy"].anova(ddf="kenward-roger-typo")
    with pytest.raises(ValueError, match="test must be"):
        fits["sleepstudy"].drop1(test="F")


# ------------------------------------------------------------------- drop1


@pytest.mark.parametrize("key", list(MODELS))
def test_drop1_matches_lme4(key, refs, fits):
    mine, theirs = fits[key].drop1(), _table(refs[key]["drop1"])
    assert list(mine.index) == list(theirs.index)
    assert list(mine.columns) == ["npar", "AIC", "LRT", "Pr(Chi)"]
    np.testing.assert_array_equal(mine["npar"].iloc[1:], theirs["npar"].iloc[1:])
    assert np.isnan(mine["npar"].iloc[0]) and np.isnan(mine["LRT"].iloc[0])
    assert _max_rel(mine["AIC"], theirs["AIC"]) < 1e-6
    np.testing.assert_allclose(mine["LRT"].iloc[1:], theirs["LRT"].iloc[1:], rtol=0, atol=1e-4)
    np.testing.assert_allclose(mine["Pr(Chi)"].iloc[1:], theirs["Pr(Chi)"].iloc[1:], rtol=1e-4, atol=1e-10)


# ------------------------------------------------------------------- R, live

_LIVE_R = textwrap.dedent(
    """
    suppressMessages(library(lmerTest))
    d <- read.csv(file.path("jaxmixed", "data", "cake.csv"))
    for (col in c("replicate", "recipe", "temperature")) d[[col]] <- factor(d[[col]])
    ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
    m <- lmer(angle ~ recipe * temperature + (1 | recipe:replicate), d, control = ctrl)
    a <- anova(m, type = 3)
    write.csv(data.frame(term = rownames(a), F = a[["F value"]], DenDF = a$DenDF), stdout(), row.names = FALSE)
    """
)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_type3_anova_matches_lmertest_live(fits):
    try:
        out = subprocess.run(
            ["Rscript", "-e", _LIVE_R], capture_output=True, text=True, check=True, timeout=300, cwd=DATA.parent.parent
        )
    except subprocess.CalledProcessError as err:
        if "there is no package called" in err.stderr:
            pytest.skip("lmerTest is not installed")
        raise
    from io import StringIO

    theirs = pd.read_csv(StringIO(out.stdout), index_col="term")
    mine = fits["cake"].anova()
    assert list(mine.index) == list(theirs.index)
    assert _max_rel(mine["F value"], theirs["F"]) < 1e-4
    assert _max_rel(mine["DenDF"], theirs["DenDF"]) < 1e-3


# ------------------------------------------------------------------- review fixes


def test_type1_does_not_depend_on_the_units_of_a_covariate(fits):
    """IQ in units 1e-4 as large: the same sequential F tests (the decomposition runs on
    unit-length columns, so its thresholds are relative)."""
    nl = jm.load_dataset("nlschools")
    scaled = jm.fit_reml("lang ~ IQ * COMB + I(IQ^2) + (1 | class)", nl.assign(IQ=nl["IQ"] * 1e-4))
    base = fits["nlschools"].anova(type=1)
    np.testing.assert_allclose(scaled.anova(type=1)["F value"], base["F value"], rtol=1e-6)
    np.testing.assert_array_equal(scaled.anova(type=1)["NumDF"], base["NumDF"])


def test_array_input_does_not_test_its_intercept():
    ss = jm.load_dataset("sleepstudy")
    X = np.column_stack([np.ones(len(ss)), ss["Days"].to_numpy(float)])
    fit = jm.fit_reml(y=ss["Reaction"].to_numpy(), X=X, Z=X, groups=ss["Subject"].to_numpy())
    intercept, days = fit.fixed_effects.index
    assert list(fit.anova().index) == [days]
    assert list(fit.drop1().index) == ["<none>", days]


def test_drop1_refuses_a_model_without_intercept_with_factors():
    cake = jm.load_dataset("cake")
    fit = jm.fit_reml("angle ~ 0 + recipe + temp + (1 | recipe:replicate)", cake)
    with pytest.raises(ValueError, match="without an intercept"):
        fit.drop1()


def test_unused_categories_are_dropped_as_r_drops_unused_levels():
    """A fixed factor's category no row has makes no (aliased) column, and the names are
    R's for the levels present."""
    ss = jm.load_dataset("sleepstudy")
    ss = ss.assign(week=pd.Categorical(np.where(ss["Days"] < 5, "w1", "w2"), categories=["w0", "w1", "w2"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = jm.fit_reml("Reaction ~ week + (1 | Subject)", ss)
    assert list(fit.fixed_effects.index) == ["(Intercept)", "weekw2"]


def test_a_name_clash_keeps_formulaic_names_for_that_column_only():
    rng = np.random.default_rng(0)
    d = pd.DataFrame(
        {
            "y": rng.normal(size=60),
            "a": pd.Categorical(rng.choice(["a", "b"], 60)),
            "ab": rng.normal(size=60),
            "g": np.repeat(np.arange(10), 6),
        }
    )
    with pytest.warns(UserWarning, match="keep formulaic's names"):
        fit = jm.fit_reml("y ~ a + ab + (1 | g)", d)
    assert list(fit.fixed_effects.index) == ["(Intercept)", "a[T.b]", "ab"]

"""Input validation: every bad input gets an error that names the problem."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed.design._design import build_design, design_from_arrays
from jaxmixed.design._offsets import OFFSET, Offsets, offset_columns, offsets_of

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture
def sleep():
    return jm.load_dataset("sleepstudy")


def test_nan_in_used_column_is_an_error(sleep):
    sleep.loc[3, "Days"] = np.nan
    with pytest.raises(ValueError, match=r"missing or non-finite.*'Days': 1.*missing='drop'"):
        jm.fit_reml(FORMULA, data=sleep)


def test_inf_in_response_is_an_error(sleep):
    sleep.loc[5, "Reaction"] = np.inf
    with pytest.raises(ValueError, match=r"'Reaction': 1"):
        jm.fit_reml(FORMULA, data=sleep)


def test_missing_group_label_is_an_error(sleep):
    sleep["Subject"] = sleep["Subject"].astype(object)
    sleep.loc[7, "Subject"] = None
    with pytest.raises(ValueError, match=r"'Subject': 1"):
        jm.fit_reml(FORMULA, data=sleep)


def test_missing_drop_drops_and_records(sleep):
    sleep.loc[[3, 50], "Days"] = np.nan
    res = jm.fit_reml(FORMULA, data=sleep, missing="drop")
    assert res.n_dropped_rows == 2
    assert res.nobs == 178
    clean = jm.fit_reml(FORMULA, data=sleep.dropna())
    assert res.objective == pytest.approx(clean.objective, rel=1e-12)
    assert "dropped for missing values: 2" in res.summary()


def test_non_finite_after_transformation_is_an_error():
    df = pd.DataFrame({"y": np.arange(12.0) % 5, "x": np.arange(12.0), "g": list("ab") * 6})
    with pytest.raises(ValueError, match=r"fixed-effects model matrix has 1 row.*\['np.log\(x\)'\]"):
        jm.fit_reml("y ~ np.log(x) + (1 | g)", data=df)


@pytest.mark.parametrize(
    "formula, message",
    [
        ("np.log(y) ~ x + (1 | g)", r"the response 'np.log\(y\)' has 3 row"),
        ("y ~ x + (np.log(x) | g)", r"model matrix of \(np.log\(x\) \| g\) has 1 row.*\['np.log\(x\)'\]"),
        ("y ~ x + (1 | h)", r"missing or non-finite values.*'h': 1"),
    ],
)
def test_non_finite_values_name_their_column(formula, message):
    df = pd.DataFrame({"y": np.arange(12.0) % 4, "x": np.arange(12.0), "g": np.arange(12) % 3})
    df["h"] = np.where(np.arange(12) == 5, np.inf, df.g)
    with pytest.raises(ValueError, match=message):
        build_design(formula, df)


def test_unknown_column(sleep):
    with pytest.raises(ValueError, match=r"\['Dayz'\].*not in the data"):
        jm.fit_reml("Reaction ~ Dayz + (1 | Subject)", data=sleep)
    with pytest.raises(ValueError, match=r"\['Subj'\].*not in the data"):
        jm.fit_reml("Reaction ~ Days + (1 | Subj)", data=sleep)
    # columns held in the index (a MultiIndex after a groupby or set_index): a hint
    with pytest.raises(ValueError, match=r"\['Days', 'Subject'\] are levels of the data's index: call data.reset_index"):
        jm.fit_reml("Reaction ~ Days + (1 | Subject)", data=sleep.set_index(["Subject", "Days"]))


def test_a_text_response_is_named_briefly(sleep):
    """A text response: the error names its first columns and how many (not all 18)."""
    with pytest.raises(ValueError, match=r"'Subject\[337\]', \.\.\. \(18 in all\)\] \(it is not numeric\)") as err:
        jm.fit_reml("Subject ~ Days + (1 | Subject)", data=sleep)
    assert len(str(err.value)) < 400 and "Subject[372]" not in str(err.value)


def test_arrays_of_different_lengths():
    rng = np.random.default_rng(0)
    y, g = rng.normal(size=20), np.repeat(np.arange(4), 5)
    with pytest.raises(ValueError, match="X has 19 rows but y has 20"):
        jm.fit_reml(y=y, X=np.ones((19, 1)), groups=g)
    with pytest.raises(ValueError, match="groups has 18 entries but y has 20"):
        jm.fit_reml(y=y, groups=g[:18])
    with pytest.raises(ValueError, match="Z has 21 rows"):
        jm.fit_reml(y=y, Z=np.ones(21), groups=g)


def test_grouping_factor_with_one_level(sleep):
    sleep["one"] = "a"
    with pytest.raises(ValueError, match="'one' has 1 level.*at least 2"):
        jm.fit_reml("Reaction ~ Days + (1 | one)", data=sleep)


def test_as_many_levels_as_observations(sleep):
    sleep["row"] = np.arange(len(sleep))
    with pytest.raises(ValueError, match="'row' has 180 levels for 180 observations.*not identifiable"):
        jm.fit_reml("Reaction ~ Days + (1 | row)", data=sleep)


def test_more_random_effects_than_observations():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=12), "x": rng.normal(size=12), "z": rng.normal(size=12)})
    df["g"] = np.repeat(np.arange(6), 2)
    with pytest.raises(ValueError, match="18 random effects for 12 observations"):
        jm.fit_reml("y ~ 1 + (x + z | g)", data=df)


def test_constant_response(sleep):
    sleep["Reaction"] = 250.0
    with pytest.raises(ValueError, match="response is constant"):
        jm.fit_reml(FORMULA, data=sleep)


def test_n_not_larger_than_p():
    df = pd.DataFrame({"y": [1.0, 2.0, 3.0, 5.0], "g": ["a", "a", "b", "b"]})
    df["x1"], df["x2"], df["x3"] = [0.0, 1, 2, 4], [1.0, 0, 3, 2], [5.0, 1, 0, 2]
    with pytest.raises(ValueError, match="n = 4 is not larger than the number of fixed effects p = 4"):
        jm.fit_reml("y ~ x1 + x2 + x3 + (1 | g)", data=df)


def test_rank_deficient_x_drops_aliased_columns_with_warning(sleep):
    sleep["Days2"] = 2 * sleep["Days"] + 1
    with pytest.warns(UserWarning, match=r"rank deficient.*\['Days2'\]"):
        res = jm.fit_reml("Reaction ~ Days + Days2 + (Days | Subject)", data=sleep)
    assert res.dropped_columns == ("Days2",)
    assert list(res.fixed_effects.index) == ["(Intercept)", "Days"]
    ref = jm.fit_reml(FORMULA, data=sleep)
    assert res.objective == pytest.approx(ref.objective, rel=1e-10)
    pred = res.predict(sleep.iloc[:5])
    np.testing.assert_allclose(pred, ref.fitted[:5], rtol=1e-8)


def test_no_random_effects_and_not_a_dataframe(sleep):
    with pytest.raises(ValueError, match="no random-effects term"):
        jm.fit_reml("Reaction ~ Days", data=sleep)
    with pytest.raises(TypeError, match="pandas DataFrame"):
        jm.fit_reml(FORMULA, data=sleep.to_dict())


def test_row_order_and_label_types_do_not_change_results(sleep):
    base = jm.fit_reml(FORMULA, data=sleep)
    shuffled = sleep.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for labels in (
        shuffled.Subject.astype(str),
        shuffled.Subject.astype(int),
        pd.Categorical(shuffled.Subject.astype(str)),
        "S" + shuffled.Subject.astype(str),
    ):
        df = shuffled.assign(Subject=labels)
        res = jm.fit_reml(FORMULA, data=df)
        assert res.objective == pytest.approx(base.objective, rel=1e-10)
        np.testing.assert_allclose(res.fixed_effects, base.fixed_effects, rtol=1e-7)
        np.testing.assert_allclose(res.theta, base.theta, rtol=1e-5)
        np.testing.assert_allclose(
            np.sort(res.random_effects["Subject"].to_numpy(), axis=0),
            np.sort(base.random_effects["Subject"].to_numpy(), axis=0),
            rtol=1e-5,
            atol=1e-6,
        )


def test_categorical_and_boolean_predictors_use_treatment_contrasts(sleep):
    sleep["late"] = sleep.Days > 4
    sleep["phase"] = np.where(sleep.Days < 3, "early", np.where(sleep.Days < 7, "mid", "late"))
    res = jm.fit_reml("Reaction ~ Days * late + phase + (1 | Subject)", data=sleep)
    # formulaic codes a boolean as 0/1 (lme4's lateTRUE), so its column is "late".
    assert {"late", "Days:late"} <= set(res.fixed_effects.index)
    # Row 0: Days 0, late False, phase "early" (the reference level): the intercept.
    assert res.predict(sleep.iloc[[0]], include_random=False)[0] == pytest.approx(
        res.fixed_effects["(Intercept)"]
    )
    assert {"phaselate", "phasemid"} <= set(res.fixed_effects.index)
    assert res.converged


def test_row_order_and_labels_do_not_change_crossed_and_nested_fits():
    pen = jm.load_dataset("Penicillin")
    base = jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", data=pen)
    shuffled = pen.sample(frac=1.0, random_state=7).reset_index(drop=True)
    relabelled = shuffled.assign(
        plate=shuffled.plate.cat.codes.astype(int) + 100,  # integers
        sample=shuffled["sample"].astype(str),  # strings
    )
    res = jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", data=relabelled)
    assert res.objective == pytest.approx(base.objective, rel=1e-10)
    np.testing.assert_allclose(res.theta, base.theta, rtol=1e-5)
    np.testing.assert_allclose(
        res.random_effects["plate"].to_numpy().ravel(),
        base.random_effects["plate"].to_numpy().ravel(),
        rtol=1e-5,
    )
    assert list(res.random_effects["plate"].index[:2]) == [100, 101]
    pastes = jm.load_dataset("Pastes")
    nested = jm.fit_reml("strength ~ 1 + (1 | batch/cask)", data=pastes)
    explicit = jm.fit_reml(
        "strength ~ 1 + (1 | batch) + (1 | cask:batch)", data=pastes.sample(frac=1.0, random_state=1)
    )
    assert nested.objective == pytest.approx(explicit.objective, rel=1e-10)
    assert list(nested.random_effects) == ["cask:batch", "batch"]
    assert nested.random_effects["cask:batch"].index[0] == "a:A"


def test_more_fixed_effects_than_observations_is_a_clear_error(sleep):
    """40 rows of 4 subjects (the other 14 categories unused, so dropped as R drops them):
    C(Days) * Subject has 40 full-rank columns, no more than the rows."""
    with pytest.raises(ValueError, match="n = 40 is not larger than the number of fixed effects p = 40"):
        jm.fit_reml("Reaction ~ C(Days) * Subject + (1 | Subject)", data=sleep.iloc[:40])


def test_random_effects_are_counted_per_term_as_lme4_does():
    """(1 | a/b/c) with 5 + 15 + 45 = 65 random effects for 60 rows: each term
    has fewer than n, so lme4 fits it, and so does jaxmixed."""
    rng = np.random.default_rng(2)
    a = np.repeat(np.arange(5), 12)
    b = np.tile(np.repeat(np.arange(3), 4), 5)
    c = np.tile(np.repeat(np.arange(3), 1), 20)
    df = pd.DataFrame({"a": a, "b": b, "c": c, "x": rng.normal(size=60)})
    df["y"] = df.x + rng.normal(size=5)[a] + rng.normal(size=60)
    res = jm.fit_reml("y ~ x + (1 | a/b/c)", data=df)
    assert list(res.random_effects) == ["c:(b:a)", "b:a", "a"]
    assert res.random_effects["c:(b:a)"].index[0] == "0:0:0"


def test_low_level_statistics_need_64_bit_mode_for_float64():
    df = jm.load_dataset("Dyestuff")
    design, arrays = build_design("Yield ~ 1 + (1 | Batch)", df)
    with pytest.raises(ValueError, match="enable_x64"):
        if hasattr(jm, "core"):  # the pure layer's entry point
            jm.design.prepare(design, arrays)
        else:
            jm.model_statistics(design, arrays)


def _simulated(seed: int = 0, n_groups: int = 8, per_group: int = 10) -> pd.DataFrame:
    """Small data with a random intercept and slope on g."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(size=n_groups)[g] + 0.3 * rng.normal(size=n_groups)[g] * x
    return pd.DataFrame({"y": y + rng.normal(size=g.size), "x": x, "xsq": x**2, "g": g})


def test_duplicate_column_names_are_an_error():
    df = _simulated()
    dup = pd.concat([df, df[["x"]]], axis=1)
    with pytest.raises(ValueError, match=r"several columns named \['x'\].*rename"):
        build_design("y ~ x + (1 | g)", dup)
    dup_group = pd.concat([df, df[["g"]]], axis=1)
    with pytest.raises(ValueError, match=r"several columns named \['g'\]"):
        build_design("y ~ x + (1 | g)", dup_group)


@pytest.mark.parametrize(
    "formula",
    ["y ~ when + (1 | g)", "y ~ x + (when | g)", "y ~ x + (0 + when || g)", "y ~ lag + (1 | g)"],
)
def test_dates_and_times_as_predictors_are_an_error(formula):
    df = _simulated()
    df["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(df)), unit="D")
    df["lag"] = pd.to_timedelta(np.arange(len(df)), unit="h")
    column = "lag" if "lag" in formula else "when"
    with pytest.raises(ValueError, match=rf"column '{column}' holds dates or times.*number.*days.*category"):
        build_design(formula, df)


def test_dates_as_python_objects_are_an_error_but_fine_as_groups():
    df = _simulated()
    df["day"] = [pd.Timestamp("2024-01-01").date()] * len(df)
    with pytest.raises(ValueError, match="column 'day' holds dates"):
        build_design("y ~ day + (1 | g)", df)
    df["week"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(7 * df.g, unit="D")
    design, _ = build_design("y ~ x + (1 | week)", df)
    assert design.factors[0].n_levels == 8


def _assert_same_fit(res, ref):
    assert res.objective == pytest.approx(ref.objective, rel=1e-10)
    np.testing.assert_allclose(res.fixed_effects.to_numpy(), ref.fixed_effects.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(res.theta.to_numpy(), ref.theta.to_numpy(), rtol=1e-6)


def test_dotted_names_fit_as_plain_names():
    df = _simulated()
    ref = jm.fit_reml("y ~ x + xsq + (x | g)", df)
    dotted = df.rename(columns={"y": "y.1", "x": "x.1", "xsq": "x.sq", "g": "g.1"})
    res = jm.fit_reml("y.1 ~ x.1 + x.sq + (x.1 | g.1)", dotted)
    _assert_same_fit(res, ref)
    assert list(res.fixed_effects.index) == ["(Intercept)", "x.1", "x.sq"]
    assert list(res.random_effects) == ["g.1"]
    assert list(res.random_effects["g.1"].columns) == ["(Intercept)", "x.1"]
    np.testing.assert_allclose(res.predict(dotted.iloc[:5]), ref.fitted[:5], rtol=1e-8)
    # x.sq next to x: the column x.sq, not an attribute of x.
    res = jm.fit_reml("y ~ x + x.sq + (x | g)", df.rename(columns={"xsq": "x.sq"}))
    _assert_same_fit(res, ref)
    assert list(res.fixed_effects.index) == ["(Intercept)", "x", "x.sq"]


def test_dotted_names_inside_transforms_keep_the_users_spelling():
    df = _simulated().rename(columns={"x": "x.1", "g": "g.1"})
    design, arrays = build_design("y ~ np.exp(x.1) + C(g.1) + (0 + x.1 || g.1)", df)
    assert design.fixed_names[:3] == ("(Intercept)", "np.exp(x.1)", "C(g.1)1")
    np.testing.assert_allclose(arrays.X[:, 1], np.exp(df["x.1"]))
    xm = design.fixed_spec.get_model_matrix(df.iloc[:3])
    assert list(xm.columns) == list(design.fixed_names)


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (x | `my group`)",
        'y ~ x + (x | Q("my group"))',
        "y ~ `my x` + (`my x` | `my group`)",
    ],
)
def test_grouping_column_with_spaces(formula):
    df = _simulated()
    ref = jm.fit_reml("y ~ x + (x | g)", df)
    spaced = df.rename(columns={"g": "my group"})
    spaced["my x"] = spaced.x
    res = jm.fit_reml(formula, spaced)
    _assert_same_fit(res, ref)
    assert list(res.random_effects) == ["my group"]
    assert set(res.varcorr.grp) == {"my group", "Residual"}
    np.testing.assert_allclose(res.predict(spaced.iloc[:5]), ref.fitted[:5], rtol=1e-8)


@pytest.mark.parametrize(
    "formula, term",
    [
        ("y ~ x + g + (1 | g)", r"\(1 \| g\) \(\['\(Intercept\)'\]\)"),
        ("y ~ x + C(g) + (x | g)", r"\(x \| g\) \(\['\(Intercept\)'\]\)"),
        ("y ~ x * g + (x || g)", r"\(x \|\| g\) \(\['\(Intercept\)'\]\)"),
    ],
)
def test_grouping_factor_as_fixed_effect_is_not_identifiable(formula, term):
    df = _simulated().assign(g=lambda d: "g" + d.g.astype(str))
    with pytest.raises(ValueError, match=rf"{term} are confounded with the fixed effects.*factor 'g'"):
        build_design(formula, df)


def test_confounding_with_array_input():
    df = _simulated()
    X = pd.get_dummies(df.g, prefix="g", dtype=float)
    with pytest.raises(ValueError, match=r"\(Z \| group\) \(\['Intercept'\]\) are confounded"):
        design_from_arrays(y=df.y, X=X, groups=df.g)


def test_confounding_check_spares_identifiable_models(sleep):
    build_design(FORMULA, sleep)
    build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", jm.load_dataset("Penicillin"))
    build_design("strength ~ 1 + (1 | batch/cask)", jm.load_dataset("Pastes"))
    df = _simulated()
    df["h"] = np.tile(np.arange(5), 16)
    build_design("y ~ x + (1 | g/h)", df)
    # X holds the indicator of one level of g, and a between-group covariate.
    df["one"] = (df.g == 3).astype(float)
    df["size"] = np.asarray([1.0, 2, 2, 3, 1, 4, 5, 2])[df.g]
    build_design("y ~ x + one + size + (x | g)", df)


@pytest.mark.parametrize("scale", [1e-5, 1e-3, 1e-2])
def test_nearly_confounded_random_effects_are_kept(scale):
    """A random slope on a covariate that is constant within each level but for
    a small wobble: with ``g`` a fixed effect, its random effects are a relative
    ``scale`` away from the span of X in every level. lme4 fits such a model;
    only an exactly confounded term (the covariate constant in each level) is
    an error. Brackets the confounding tolerance (1e-6) from both sides."""
    df = _simulated(n_groups=3, per_group=10).assign(g=lambda d: "g" + d.g.astype(str))
    wobble = np.tile([1.0, -1.0], len(df) // 2)  # mean 0 and norm 1 per row in each level
    df["w"] = 2.0 + scale * wobble
    design, arrays = build_design("y ~ g + (0 + w | g)", df)
    assert design.factors[0].term_columns == (("w",),)
    np.testing.assert_array_equal(arrays.Z[0][:, 0], df.w.to_numpy())
    with pytest.raises(ValueError, match=r"\(0 \+ w \| g\) \(\['w'\]\) are confounded"):
        build_design("y ~ g + (0 + w | g)", df.assign(w=2.0))


@pytest.mark.parametrize("scale", [1e-6, 1e-3])
def test_nearly_collinear_fixed_effect_is_kept(scale):
    """A fixed-effects column a relative ``scale`` away from the span of the
    earlier columns (above lme4's rank tolerance 1e-7) is kept, as lme4 keeps
    it; an exactly collinear one is dropped, with a warning that names it."""
    df = _simulated()
    wobble = np.tile([1.0, -1.0], len(df) // 2)
    df["x2"] = 3.0 * df.x - 1.0 + scale * np.linalg.norm(3.0 * df.x - 1.0) / np.sqrt(len(df)) * wobble
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "rank deficient" warning
        design, arrays = build_design("y ~ x + x2 + (1 | g)", df)
    assert design.fixed_names == ("(Intercept)", "x", "x2") and design.dropped_fixed == ()
    assert arrays.X.shape == (len(df), 3)
    with pytest.warns(UserWarning, match=r"rank deficient: dropping aliased column\(s\) \['x2'\]"):
        design, arrays = build_design("y ~ x + x2 + (1 | g)", df.assign(x2=3.0 * df.x - 1.0))
    assert design.fixed_names == ("(Intercept)", "x") and design.dropped_fixed == ("x2",)
    assert design.all_fixed_names == ("(Intercept)", "x", "x2") and arrays.X.shape == (len(df), 2)


def test_predict_matches_integer_and_string_labels(sleep):
    sleep = sleep.assign(Subject=sleep.Subject.astype(int))
    res = jm.fit_reml(FORMULA, data=sleep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_str = res.predict(sleep.assign(Subject=sleep.Subject.astype(str)))
        as_cat = res.predict(sleep.assign(Subject=pd.Categorical(sleep.Subject.astype(str))))
    np.testing.assert_allclose(as_str, res.fitted, rtol=1e-12)
    np.testing.assert_allclose(as_cat, res.fitted, rtol=1e-12)
    with pytest.raises(ValueError, match=r"'Subject'.*of type string.*of type integer"):
        res.predict(sleep.assign(Subject="S" + sleep.Subject.astype(str)))
    # Fitted with strings, predicted with integers; an unseen integer only warns.
    res = jm.fit_reml(FORMULA, data=sleep.assign(Subject=sleep.Subject.astype(str)))
    new = sleep.iloc[:12].copy()
    new.loc[new.index[-2:], "Subject"] = 9999
    with pytest.warns(UserWarning, match="2 row"):
        pred = res.predict(new)
    np.testing.assert_allclose(pred[:10], res.fitted[:10], rtol=1e-12)
    np.testing.assert_allclose(pred[10:], res.fitted_fixed[10:12], rtol=1e-12)


def test_non_numeric_response_is_an_error():
    df = _simulated().assign(y=lambda d: np.where(d.y > 1, "high", "low"))
    with pytest.raises(ValueError, match=r"response 'y' must be one numeric column.*convert it to numbers"):
        build_design("y ~ x + (1 | g)", df)


def _columns_frame(seed: int = 3) -> pd.DataFrame:
    """Numeric columns of several dtypes, two grouping columns and odd ones."""
    rng = np.random.default_rng(seed)
    n = 60
    g = np.repeat(np.arange(6), 10)
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + rng.normal(size=6)[g],
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "k": rng.integers(0, 9, size=n),
            "u": rng.integers(0, 9, size=n).astype(np.uint8),
            "f": rng.normal(size=n).astype(np.float32),
            "b": rng.random(n) < 0.5,
            "s": rng.choice(["p", "q", "r"], size=n),
            "g": g,
            "h": np.tile(np.arange(5), 12),
        },
        index=rng.permutation(n) + 100,  # not 0..n-1: the fast path must not care
    )


def _formulaic_only(monkeypatch, formula, df):
    """build_design with the fast path turned off: formulaic's answer."""
    from jaxmixed.design import _design

    with monkeypatch.context() as m:
        m.setattr(_design, "numeric_plan", lambda parsed, data: None)
        return build_design(formula, df)


def _assert_same_design(fast, slow):
    (d1, a1), (d2, a2) = fast, slow
    assert d1.response == d2.response
    assert d1.fixed_names == d2.fixed_names and d1.all_fixed_names == d2.all_fixed_names
    assert d1.report_order == d2.report_order
    np.testing.assert_array_equal(a1.y, a2.y)
    np.testing.assert_array_equal(a1.X, a2.X)
    for f1, f2, c1, c2, z1, z2 in zip(d1.factors, d2.factors, a1.codes, a2.codes, a1.Z, a2.Z, strict=True):
        assert (f1.name, f1.columns, f1.term_names, f1.term_columns) == (
            f2.name,
            f2.columns,
            f2.term_names,
            f2.term_columns,
        )
        assert f1.structure == f2.structure
        pd.testing.assert_index_equal(f1.levels, f2.levels)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(z1, z2)


def _assert_same_matrix(spec1, spec2, newdata, **kwargs):
    m1 = pd.DataFrame(spec1.get_model_matrix(newdata, **kwargs))
    m2 = pd.DataFrame(spec2.get_model_matrix(newdata, **kwargs))
    assert list(m1.columns) == list(m2.columns)
    pd.testing.assert_index_equal(m1.index, m2.index)
    np.testing.assert_array_equal(np.asarray(m1, dtype=float), np.asarray(m2, dtype=float))


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 | g)",
        "y ~ (1 | g)",
        "y ~ 1 + (1 | g)",
        "y ~ x + (x | g)",
        "y ~ z + x + (x + z | g)",
        "y ~ 0 + x + z + (0 + x | g)",
        "y ~ x + z + 0 + (1 | g)",
        "y ~ 1 + x + (1 + z | g)",
        "y ~ x + (x || g)",
        "y ~ x + (0 + x + z || g)",
        "y ~ k + u + f + (k | g)",
        "y ~ x + (1 | g) + (1 | h)",
        "y ~ x + (x | g) + (1 | h) + (0 + z | g)",
        "y ~ x + (1 | g/h)",
        "y ~ x + (1 | g:h)",
        "x~z+k+(z||h)",
        "k ~ x + (1 | g)",
    ],
)
def test_numeric_fast_path_matches_formulaic(monkeypatch, formula):
    from jaxmixed.design._formula import parse_formula
    from jaxmixed.design._numeric import numeric_plan

    df = _columns_frame()
    assert numeric_plan(parse_formula(formula), df) is not None
    fast, slow = build_design(formula, df), _formulaic_only(monkeypatch, formula, df)
    _assert_same_design(fast, slow)
    newdata = _columns_frame(seed=4).iloc[::-3]
    specs = [(fast[0].fixed_spec, slow[0].fixed_spec)] + [
        pair
        for f1, f2 in zip(fast[0].factors, slow[0].factors, strict=True)
        for pair in zip(f1.term_specs, f2.term_specs, strict=True)
    ]
    for spec1, spec2 in specs:
        _assert_same_matrix(spec1, spec2, newdata)
        _assert_same_matrix(spec1, spec2, newdata, na_action="raise")
        # Data the fast matrix cannot take go to formulaic's spec: same answers.
        odd = newdata.assign(
            x=newdata.x.where(newdata.x > 0), z=newdata.z.astype(str), k=newdata.k.astype("Int64")
        )
        for kwargs in ({}, {"na_action": "raise"}):
            try:
                spec2.get_model_matrix(odd, **kwargs)
            except Exception as err:
                with pytest.raises(type(err), match=re.escape(str(err))):
                    spec1.get_model_matrix(odd, **kwargs)
            else:
                _assert_same_matrix(spec1, spec2, odd, **kwargs)
        missing = newdata.drop(columns=["x", "z", "k"])
        if any(c in ("x", "z", "k") for c in getattr(spec1, "columns", ())):
            with pytest.raises(Exception) as slow_err:
                spec2.get_model_matrix(missing)
            with pytest.raises(type(slow_err.value), match=re.escape(str(slow_err.value))):
                spec1.get_model_matrix(missing)


def test_numeric_fast_path_fits_like_formulaic(monkeypatch):
    df = _columns_frame()
    fast = jm.fit_reml("y ~ x + k + (x | g)", df)
    from jaxmixed.design import _design

    with monkeypatch.context() as m:
        m.setattr(_design, "numeric_plan", lambda parsed, data: None)
        slow = jm.fit_reml("y ~ x + k + (x | g)", df)
    pd.testing.assert_series_equal(fast.fixed_effects, slow.fixed_effects)
    pd.testing.assert_frame_equal(fast.varcorr, slow.varcorr)
    np.testing.assert_array_equal(fast.predict(df.iloc[:9]), slow.predict(df.iloc[:9]))


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ b + (1 | g)",  # bool: formulaic's reading
        "y ~ s + (1 | g)",  # strings: a categorical
        "y ~ x + (s | g)",
        "y ~ x:z + (1 | g)",  # an interaction
        "y ~ np.log(k + 1) + (1 | g)",  # a transform
        "y ~ C(k) + (1 | g)",
        "y ~ x + x + (1 | g)",  # a repeated name
        "y ~ -1 + x + (1 | g)",
        "y ~ x - 1 + (1 | g)",
        "y ~ 0 + x + 1 + (1 | g)",
        "y ~ `x` + (1 | g)",
        "np.log(u + 1) ~ x + (1 | g)",
        "y ~ x + (1 + x:z | g)",
    ],
)
def test_formulas_outside_the_fast_path_go_to_formulaic(monkeypatch, formula):
    from jaxmixed.design._columns import analyse_columns
    from jaxmixed.design._formula import parse_formula
    from jaxmixed.design._numeric import numeric_plan

    df = _columns_frame()
    parsed = analyse_columns(parse_formula(formula), tuple(df.columns)).formula
    assert numeric_plan(parsed, df) is None
    _assert_same_design(build_design(formula, df), _formulaic_only(monkeypatch, formula, df))


def test_fast_path_errors_are_the_same(monkeypatch):
    df = _columns_frame()
    cases = [
        ("y ~ nope + (1 | g)", df),
        ("s ~ x + (1 | g)", df),  # a string response
        ("y ~ x + (1 | g)", df.assign(x=df.x.where(df.x > 0))),  # NaN
        ("y ~ x + (1 | g)", df.assign(y=1.0)),  # constant response
        ("y ~ x + z + (1 | g)", df.assign(z=2 * df.x)),  # aliased: a warning, then fits
        ("y ~ x + (1 | g)", df.iloc[:1]),
        ("y ~ k + (k | g)", df.assign(k=df.g)),  # confounded
    ]
    for formula, data in cases:
        outcomes = []
        for build in (build_design, lambda f, d: _formulaic_only(monkeypatch, f, d)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    build(formula, data)
                    outcomes.append(("ok", [str(w.message) for w in caught]))
                except Exception as err:
                    outcomes.append((type(err), str(err)))
        assert outcomes[0] == outcomes[1], formula


def test_formula_analysis_cache_follows_the_columns():
    df = _simulated()
    design, _ = build_design("y ~ x + (1 | g)", df)
    assert design.fixed_names == ("(Intercept)", "x")
    dotted = df.rename(columns={"x": "x.1"})
    design, _ = build_design("y ~ x.1 + (1 | g)", dotted)
    assert design.fixed_names == ("(Intercept)", "x.1")
    with pytest.raises(ValueError, match=r"\['x'\] used in the formula are not in the data"):
        build_design("y ~ x + (1 | g)", dotted)


def test_design_modules_import_one_way():
    """Inside jaxmixed.design each module imports only the modules of earlier
    steps: formula → quoting → R's names → columns → offsets → validation → matrices → the
    two builders → factors → design → names, prepare."""
    import ast
    from pathlib import Path

    import jaxmixed.design

    order = [
        "_formula",
        "_quoting",
        "_rnames",
        "_columns",
        "_offsets",
        "_update",
        "_validation",
        "_matrices",
        "_formulaic",
        "_numeric",
        "_factors",
        "_design",
        "_names",
        "_prepare",
        "__init__",
    ]
    package = Path(jaxmixed.design.__file__).parent
    assert sorted(p.stem for p in package.glob("*.py")) == sorted(order)
    for k, module in enumerate(order):
        tree = ast.parse((package / f"{module}.py").read_text())
        own = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert own <= set(order[:k]), (module, own - set(order[:k]))


@pytest.mark.parametrize("through", ["fit_reml", "build_design"])
def test_rank_warning_points_at_the_users_line(through):
    """However deep the library's own calls, the warning names the caller's file."""
    df = jm.load_dataset("sleepstudy").assign(D2=lambda d: 2 * d.Days)
    formula = "Reaction ~ Days + D2 + (1 | Subject)"
    call = jm.fit_reml if through == "fit_reml" else jm.design.build_design
    with pytest.warns(UserWarning, match="rank deficient") as record:
        call(formula, df)
    assert {w.filename for w in record if "rank deficient" in str(w.message)} == {__file__}


# ---------------------------------------------------------------- offsets (design/_offsets.py)


def test_offsets_leave_the_formula_and_are_summed_on_the_kept_rows(sleep):
    """``offset()`` terms are split off the formula and, with ``offset=``, summed on the rows
    kept (the design keeps the formula as given, the arrays the response as given)."""
    sleep = sleep.assign(o=np.sqrt(sleep["Days"]))
    sleep.loc[4, "o"] = np.nan
    formula = "Reaction ~ Days + offset(2 * Days) + (Days | Subject) + offset(log(Days + 1))"
    design, arrays = build_design(formula, sleep, missing="drop", offset="o", allow_offsets=True)
    kept = sleep.drop(index=4)
    expected = 2 * kept["Days"] + np.log(kept["Days"] + 1) + kept["o"]
    np.testing.assert_allclose(arrays.offset, expected, rtol=1e-15)
    np.testing.assert_array_equal(arrays.y, kept["Reaction"])
    np.testing.assert_allclose(arrays.working_y, kept["Reaction"] - expected, rtol=1e-15)
    assert design.n_dropped_rows == 1 and design.formula == formula
    assert design.offsets.terms == ("2 * Days", "log(Days + 1)") and design.offsets.argument == "o"
    assert design.fixed_names == ("(Intercept)", "Days")
    np.testing.assert_allclose(design.offsets.on(kept), expected, rtol=1e-15)
    plain_design, plain = build_design(FORMULA, sleep)
    assert plain.offset is None and not plain_design.offsets.given
    np.testing.assert_array_equal(plain.working_y, plain.y)


def test_offsets_read_columns_as_used_columns():
    columns = ("Reaction", "Days", "Subject", "x.1", "o")
    assert offset_columns(Offsets(("log(x.1)", "2 * np.sqrt(Days)"), "o"), columns) == {"x.1", "Days", "o"}
    assert offset_columns(Offsets((), np.zeros(3)), columns) == {OFFSET}
    rest, offsets = offsets_of("y ~ x + offset(a) + (1 | g)", [1, 2], allowed=True)
    assert rest == "y ~ x + (1 | g)" and offsets.terms == ("a",)
    assert isinstance(offsets.argument, np.ndarray) and offsets.argument.dtype == np.float64
    with pytest.raises(ValueError, match="must be a term added"):
        offsets_of("y ~ x + (offset(a) | g)", None, allowed=True)
    with pytest.raises(ValueError, match="offsets .* are not supported by this fit"):
        offsets_of("y ~ x + (1 | g)", "o", allowed=False)


def test_offset_arrays_are_checked_and_dropped_with_their_rows(sleep):
    offset = np.arange(len(sleep), dtype=float)
    offset[[0, 7]] = np.nan
    with pytest.raises(ValueError, match=r"'\(offset\)': 2 row"):
        build_design(FORMULA, sleep, offset=offset, allow_offsets=True)
    _, arrays = build_design(FORMULA, sleep, missing="drop", offset=offset, allow_offsets=True)
    np.testing.assert_array_equal(arrays.offset, np.delete(offset, [0, 7]))
    with pytest.raises(ValueError, match="column named '\\(offset\\)'"):
        build_design(FORMULA, sleep.assign(**{"(offset)": 1.0}), offset=offset, allow_offsets=True)
    design, arrays = design_from_arrays(sleep["Reaction"], groups=sleep["Subject"], offset=offset, missing="drop")
    np.testing.assert_array_equal(arrays.offset, np.delete(offset, [0, 7]))
    assert design.n_dropped_rows == 2 and isinstance(design.offsets.argument, np.ndarray)
    with pytest.raises(ValueError, match="offset has 5 entries but y has 180"):
        design_from_arrays(sleep["Reaction"], groups=sleep["Subject"], offset=np.zeros(5))


def test_build_design_refuses_offsets_unless_its_caller_fits_them(sleep):
    """Without ``allow_offsets`` an ``offset()`` term is refused, not read as a column named
    ``offset`` (issue 23) nor left out of the model."""
    with pytest.raises(ValueError, match="offsets .* are not supported by this fit"):
        build_design(FORMULA + " + offset(Days)", sleep)
    with pytest.raises(ValueError, match="offsets .* are not supported by this fit"):
        build_design(FORMULA, sleep, offset="Days")

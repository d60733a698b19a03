"""jaxmixed.sklearn: scikit-learn's estimator checks, metadata routing of groups, grouped CV."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

import sklearn  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    GroupKFold,
    KFold,
    cross_val_score,
    cross_validate,
)
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    estimator_checks_generator,
    parametrize_with_checks,
)

import jaxmixed as jm  # noqa: E402
from jaxmixed.sklearn import (  # noqa: E402
    MixedEMRegressor,
    MixedLMRegressor,
    MixedNNRegressor,
    NNRegressor,
    NoGroupsWarning,
    cross_validate_mixed,
)

# Small, fast training settings for the network estimators in the checks.
FAST_NN = {"max_epochs": 100, "learning_rate": 0.01, "patience": 20}


def simulate(n_groups=24, per_group=10, beta=(2.0, -1.0), sd_group=1.5, sd_slope=0.0, seed=0):
    """A random-intercept (and slope on x1) model: X (n, d), y (n,), string labels (n,)."""
    rng = np.random.default_rng(seed)
    n, d = n_groups * per_group, len(beta)
    codes = np.repeat(np.arange(n_groups), per_group)
    X = rng.normal(size=(n, d))
    b0 = sd_group * rng.normal(size=n_groups)
    b1 = sd_slope * rng.normal(size=n_groups)
    y = 1.0 + X @ np.asarray(beta) + b0[codes] + b1[codes] * X[:, -1] + rng.normal(size=n)
    return X, y, np.asarray([f"g{c:03d}" for c in codes], dtype=object)


@pytest.fixture(scope="module")
def data():
    return simulate()


# ------------------------------------------------------------------ optional dependency


def test_import_jaxmixed_does_not_import_sklearn_and_missing_sklearn_says_how_to_install():
    code = (
        "import sys, jaxmixed\n"
        "assert 'sklearn' not in sys.modules, 'import jaxmixed imported sklearn'\n"
        "sys.modules['sklearn'] = None  # as if scikit-learn were not installed\n"
        "try:\n"
        "    import jaxmixed.sklearn\n"
        "except ImportError as err:\n"
        "    assert 'pip install jaxmixed[sklearn]' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------ scikit-learn's estimator checks

# scikit-learn's checks call fit(X, y) without groups: with allow_no_groups=True
# this runs the fit of the fixed part alone (NoGroupsWarning). GroupedLM / GroupedEM
# below run a selection of the checks on the mixed fit itself, and BinnedLM /
# BinnedEM all of them with the labels in a column of X (group_col=0).
CHECKED = [
    MixedLMRegressor(allow_no_groups=True),
    MixedEMRegressor(LinearRegression(), allow_no_groups=True),
    NNRegressor(**FAST_NN),
    MixedNNRegressor(**FAST_NN, allow_no_groups=True),
]


def expected_failed_checks(estimator) -> dict[str, str]:
    """Checks that cannot apply. None so far: fit takes no sample_weight, so
    scikit-learn does not run its sample-weight checks."""
    return {}


@pytest.mark.filterwarnings("ignore::jaxmixed.sklearn.NoGroupsWarning")
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _block_groups(X) -> np.ndarray:
    """2 to 4 clusters of consecutive rows (not aligned with the checks' periodic y)."""
    n = len(np.asarray(X))
    k = max(2, min(4, n // 3))
    return np.arange(n) * k // n


class GroupedLM(MixedLMRegressor):
    """MixedLMRegressor that makes up clusters when fit gets none (for the checks)."""

    def fit(self, X, y, groups=None):
        return super().fit(X, y, groups=_block_groups(X) if groups is None else groups)


class GroupedEM(MixedEMRegressor):
    """MixedEMRegressor that makes up clusters when fit gets none (for the checks)."""

    def fit(self, X, y, groups=None):
        return super().fit(X, y, groups=_block_groups(X) if groups is None else groups)


# Each check fits new shapes (a compilation of the mixed fit, ~2 s each): a selection.
GROUPED_CHECKS = {
    "check_estimators_pickle",
    "check_fit_idempotent",
    "check_regressors_train",
    "check_estimators_dtypes",
    "check_methods_sample_order_invariance",
    "check_n_features_in_after_fitting",
    "check_supervised_y_2d",
}


def _grouped_checks():
    for est in (GroupedLM(), GroupedEM(LinearRegression())):
        for estimator, check in estimator_checks_generator(est, mark="xfail"):
            name = getattr(check, "func", check).__name__
            if name in GROUPED_CHECKS and not check.keywords.get("readonly_memmap", False):
                yield pytest.param(estimator, check, id=f"{type(est).__name__}-{name}")


@pytest.mark.parametrize("estimator, check", list(_grouped_checks()))
def test_sklearn_estimator_checks_with_groups(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoGroupsWarning)  # the mixed fit, not the fallback
        check(estimator)


def test_grouped_check_wrappers_fit_mixed_models():
    X, y, _ = simulate(n_groups=4, per_group=6, seed=3)
    assert GroupedLM().fit(X, y).results_.n_levels == {"group": 4}
    assert GroupedEM(LinearRegression()).fit(X, y).model_ is not None


def _binned_first_column(X):
    """X with its first column cut into bins of width 1/2 (floor(2x)): a few labels, not one per row.

    The checks pass random floats; as labels they would make one cluster per
    row, whose effects fit_reml refuses as not identifiable from the residual.
    Other inputs (sparse, 1-d, no columns) pass unchanged, for the checks'
    errors.
    """
    if isinstance(X, pd.DataFrame):
        if X.shape[1] and X.dtypes.iloc[0].kind in "fiu":
            X = X.copy()
            X.iloc[:, 0] = _cut(X.iloc[:, 0]).astype(X.dtypes.iloc[0])
        return X
    if sparse.issparse(X):
        return X
    arr = np.asarray(X).copy()  # np.array(X) need not copy a non-array with __array__
    if arr.ndim != 2 or not arr.shape[1] or arr.dtype.kind not in "fiuO":
        return X
    arr[:, 0] = _cut(arr[:, 0])
    return arr.tolist() if isinstance(X, list) else arr


def _cut(column) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # NaN and inf stay non-finite, for the checks' errors
        return np.floor(2 * np.asarray(column, dtype=np.float64))


class BinnedLM(MixedLMRegressor):
    """MixedLMRegressor(group_col=0) whose label column is binned first (for the checks)."""

    def fit(self, X, y, groups=None):
        return super().fit(_binned_first_column(X), y, groups=groups)

    def predict(self, X, groups=None):
        return super().predict(_binned_first_column(X), groups=groups)


class BinnedEM(MixedEMRegressor):
    """MixedEMRegressor(group_col=0) whose label column is binned first (for the checks)."""

    def fit(self, X, y, groups=None):
        return super().fit(_binned_first_column(X), y, groups=groups)

    def predict(self, X, groups=None):
        return super().predict(_binned_first_column(X), groups=groups)


@parametrize_with_checks(
    [BinnedLM(group_col=0), BinnedEM(LinearRegression(), group_col=0)],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks_with_group_col(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoGroupsWarning)  # every fit is a mixed fit
        check(estimator)


def test_binned_check_wrappers_fit_mixed_models():
    X, y, _ = simulate(n_groups=4, per_group=6, seed=3)
    lm = BinnedLM(group_col=0).fit(X, y)
    assert lm.results_ is not None and 2 <= lm.results_.n_levels["group"] < len(y)
    assert lm.n_features_in_ == 2 and lm.coef_.shape == (1,)
    assert BinnedEM(LinearRegression(), group_col=0).fit(X, y).model_ is not None


# ------------------------------------------------------------------ MixedLMRegressor


def test_mixed_lm_equals_fit_reml(data):
    X, y, g = simulate(n_groups=30, per_group=8, sd_slope=0.7, seed=1)
    est = MixedLMRegressor(random_slopes=[1]).fit(X, y, groups=g)
    assert est.formula_ == "y ~ x0 + x1 + (1 + x1 | group)"
    frame = pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "y": y, "group": g})
    ref = jm.fit_reml("y ~ x0 + x1 + (1 + x1 | group)", frame)
    np.testing.assert_allclose(est.results_.fixed_effects.to_numpy(), ref.fixed_effects.to_numpy(), atol=1e-8)
    np.testing.assert_allclose(est.intercept_, ref.fixed_effects["(Intercept)"], atol=1e-8)
    np.testing.assert_allclose(est.coef_, ref.fixed_effects[["x0", "x1"]].to_numpy(), atol=1e-8)
    np.testing.assert_allclose(est.results_.varcorr.vcov, ref.varcorr.vcov, rtol=1e-8)
    np.testing.assert_allclose(est.predict(X, groups=g), ref.fitted, atol=1e-8)
    np.testing.assert_allclose(est.predict(X), ref.fitted_fixed, atol=1e-8)
    assert est.score(X, y, groups=g) > est.score(X, y) > 0
    assert est.n_features_in_ == 2
    assert isinstance(est.plain_estimator(), LinearRegression)
    assert MixedLMRegressor(reml=False).fit(X, y, groups=g).results_.reml is False


def test_unseen_groups_get_the_population_prediction(data):
    X, y, g = data
    est = MixedLMRegressor().fit(X, y, groups=g)
    new = np.where(np.arange(40) % 2 == 0, "unseen", g[:40])
    with pytest.warns(UserWarning, match="not seen in fitting"):
        pred = est.predict(X[:40], groups=new)
    population = est.predict(X[:40])
    np.testing.assert_allclose(pred[::2], population[::2], atol=1e-12)
    assert not np.allclose(pred[1::2], population[1::2])


def test_fit_without_groups_is_an_error_that_says_how_to_give_them(data):
    X, y, g = data
    for est in (MixedLMRegressor(), MixedEMRegressor(LinearRegression()), MixedNNRegressor(**FAST_NN)):
        with pytest.raises(ValueError, match="no cluster labels") as err:
            est.fit(X, y)
        for way in ("groups=", "group_col=", "enable_metadata_routing=True", "allow_no_groups=True"):
            assert way in str(err.value), way
        with pytest.raises(NotFittedError):  # refused before fit set anything
            est.predict(X)


def test_allow_no_groups_fits_the_fixed_part_and_warns(data):
    X, y, g = data
    with pytest.warns(NoGroupsWarning, match="allow_no_groups=True"):
        est = MixedLMRegressor(allow_no_groups=True).fit(X, y)
    ols = LinearRegression().fit(X, y)
    assert est.results_ is None and est.formula_ is None
    np.testing.assert_allclose(est.coef_, ols.coef_, atol=1e-10)
    np.testing.assert_allclose(est.predict(X), ols.predict(X), atol=1e-10)
    with pytest.warns(UserWarning, match="not seen in fitting"):
        np.testing.assert_allclose(est.predict(X, groups=g), ols.predict(X), atol=1e-10)


def test_bad_arguments_are_errors(data):
    X, y, g = data
    with pytest.raises(ValueError, match="random_slopes"):
        MixedLMRegressor(random_slopes=[2]).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="one label per row"):
        MixedLMRegressor().fit(X, y, groups=g[:-1])
    with pytest.raises(ValueError, match="cv must be"):
        cross_validate_mixed(MixedLMRegressor(), X, y, g, cv="clusters")
    with pytest.raises(ValueError, match="activation"):
        NNRegressor(activation="no_such_function").fit(X, y)


# ------------------------------------------------------------------ scikit-learn's tools


def test_cross_validate_group_kfold_routes_groups_to_fit(data):
    X, y, g = data
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("error", NoGroupsWarning)
        routed = cross_validate(
            MixedLMRegressor(), X, y, cv=GroupKFold(4), params={"groups": g}, return_estimator=True
        )
        # Without routing: groups for the splitter, params for fit.
        with sklearn.config_context(enable_metadata_routing=False):
            manual = cross_validate(
                MixedLMRegressor(), X, y, cv=GroupKFold(4), groups=g, params={"groups": g}
            )
    assert all(est.results_.n_levels == {"group": 18} for est in routed["estimator"])
    np.testing.assert_allclose(manual["test_score"], routed["test_score"], rtol=1e-10)
    assert np.all(routed["test_score"] > 0.3)


def test_score_request_gives_within_cluster_scores(data):
    X, y, g = data
    cv = KFold(4, shuffle=True, random_state=0)  # clusters seen in training
    with sklearn.config_context(enable_metadata_routing=True):
        within = cross_validate(
            MixedLMRegressor().set_score_request(groups=True), X, y, cv=cv, params={"groups": g}
        )
        population = cross_validate(MixedLMRegressor(), X, y, cv=cv, params={"groups": g})
    assert np.all(within["test_score"] > population["test_score"] + 0.1)


def test_grid_search_over_reml_with_a_pipeline(data):
    X, y, g = data
    pipe = Pipeline([("scale", StandardScaler()), ("mixed", MixedLMRegressor())])
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("error", NoGroupsWarning)
        search = GridSearchCV(pipe, {"mixed__reml": [True, False]}, cv=GroupKFold(4))
        search.fit(X, y, groups=g)
    assert list(search.cv_results_["param_mixed__reml"]) == [True, False]
    best = search.best_estimator_
    assert best[-1].results_.reml is search.best_params_["mixed__reml"]
    # Without routing a Pipeline passes step parameters; the fit is affine-invariant in X.
    pipe.set_params(mixed__reml=True).fit(X, y, mixed__groups=g)
    direct = MixedLMRegressor().fit(X, y, groups=g)
    np.testing.assert_allclose(pipe.predict(X, groups=g), direct.predict(X, groups=g), atol=1e-6)


# ------------------------------------------------------------------ group_col: the labels as a column of X


def with_codes(X, g) -> np.ndarray:
    """[codes of g, X] (n, 1 + d): the labels as integer codes in column 0."""
    return np.column_stack([np.unique(g, return_inverse=True)[1], X])


def test_group_col_by_name_and_by_index_equals_groups(data):
    X, y, g = data
    direct = MixedLMRegressor(random_slopes=[1]).fit(X, y, groups=g)
    expected = direct.predict(X, groups=g)
    frame = pd.DataFrame({"a": X[:, 0], "school": g, "b": X[:, 1]})  # string labels, mid-frame
    by_name = MixedLMRegressor(random_slopes=[1], group_col="school").fit(frame, y)
    # random_slopes counts among the features: [1] is "b" here, as x1 of the direct fit
    assert by_name.formula_ == direct.formula_ == "y ~ x0 + x1 + (1 + x1 | group)"
    assert by_name.n_features_in_ == 3 and list(by_name.feature_names_in_) == ["a", "school", "b"]
    assert by_name.coef_.shape == (2,)
    last = np.column_stack([X, with_codes(X, g)[:, 0]])  # integer codes, last column
    as_objects = np.column_stack([g, X]).astype(object)  # string labels in an object array
    cases = [
        (by_name, frame),
        (MixedLMRegressor(random_slopes=[1], group_col=-1).fit(last, y), last),
        (MixedLMRegressor(random_slopes=[1], group_col=0).fit(as_objects, y), as_objects),
        (MixedLMRegressor(random_slopes=[1], group_col=1).fit(frame, y), frame),  # an int: a position
    ]
    for est, X_ in cases:
        np.testing.assert_allclose(est.coef_, direct.coef_, atol=1e-8)
        np.testing.assert_allclose(est.predict(X_), expected, atol=1e-8)
        assert est.score(X_, y) == pytest.approx(direct.score(X, y, groups=g), abs=1e-10)


def test_group_col_unseen_clusters_get_the_population_prediction(data):
    X, y, g = data
    est = MixedLMRegressor(group_col="school").fit(pd.DataFrame({"school": g, "a": X[:, 0], "b": X[:, 1]}), y)
    new = pd.DataFrame(
        {"school": np.where(np.arange(40) % 2 == 0, "unseen", g[:40]), "a": X[:40, 0], "b": X[:40, 1]}
    )
    with pytest.warns(UserWarning, match="not seen in fitting"):
        pred = est.predict(new)
    population = est.results_.predict(pd.DataFrame({"x0": X[:40, 0], "x1": X[:40, 1]}), include_random=False)
    np.testing.assert_allclose(pred[::2], population[::2], atol=1e-12)
    assert not np.allclose(pred[1::2], population[1::2])


def test_group_col_errors(data):
    X, y, g = data
    Xg = with_codes(X, g)
    with pytest.raises(ValueError, match=r"groups=.*group_col=0"):
        MixedLMRegressor(group_col=0).fit(Xg, y, groups=g)
    fitted = MixedLMRegressor(group_col=0).fit(Xg, y)
    with pytest.raises(ValueError, match=r"groups=.*group_col=0"):
        fitted.predict(Xg, groups=g)
    with pytest.raises(ValueError, match="must be a pandas DataFrame"):
        MixedLMRegressor(group_col="school").fit(Xg, y)
    with pytest.raises(ValueError, match="must name one column"):
        MixedLMRegressor(group_col="school").fit(pd.DataFrame(X, columns=["a", "b"]), y)
    with pytest.raises(ValueError, match="not a column of X"):
        MixedLMRegressor(group_col=3).fit(Xg, y)
    with pytest.raises(ValueError, match="1 feature"):
        MixedLMRegressor(group_col=0).fit(Xg[:, :1], y)
    with_nan = Xg.copy()
    with_nan[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MixedLMRegressor(group_col=0).fit(with_nan, y)
    with pytest.raises(ValueError, match="X has 2 features"):
        fitted.predict(X)  # without the label column
    with pytest.raises(ValueError, match="group_col=None"):
        cross_validate_mixed(MixedLMRegressor(group_col=0), Xg, y, g)


def test_cross_val_score_with_group_col_fits_random_effects(data):
    X, y, g = data
    Xg = with_codes(X, g)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoGroupsWarning)  # every fold a mixed fit
        warnings.filterwarnings("ignore", message=".*not seen in fitting")  # GroupKFold: all test clusters
        grouped = cross_val_score(MixedLMRegressor(group_col=0), Xg, y, groups=g, cv=GroupKFold(4))
        rows = cross_val_score(
            MixedLMRegressor(group_col=0), Xg, y, cv=KFold(4, shuffle=True, random_state=0)
        )
    with pytest.warns(NoGroupsWarning):
        fixed = cross_val_score(MixedLMRegressor(allow_no_groups=True), X, y, groups=g, cv=GroupKFold(4))
        fixed_rows = cross_val_score(
            MixedLMRegressor(allow_no_groups=True), X, y, cv=KFold(4, shuffle=True, random_state=0)
        )
    # Unseen test clusters: the population prediction of a GLS fit, close to OLS but not equal.
    assert not np.allclose(grouped, fixed, rtol=1e-3) and np.all(np.abs(grouped - fixed) < 0.1)
    assert np.all(rows > fixed_rows + 0.1)  # seen clusters: their random effects count


def test_grid_search_with_group_col_without_routing(data):
    X, y, g = data
    search = GridSearchCV(MixedLMRegressor(group_col=0), {"reml": [True, False]}, cv=GroupKFold(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoGroupsWarning)
        warnings.filterwarnings("ignore", message=".*not seen in fitting")
        search.fit(with_codes(X, g), y, groups=g)  # groups for the splitter only
    assert list(search.cv_results_["param_reml"]) == [True, False]
    assert search.best_estimator_.results_.n_levels == {"group": 24}
    assert search.best_estimator_.results_.reml is search.best_params_["reml"]


def test_pipeline_scales_the_features_and_passes_the_group_column(data):
    X, y, g = data
    direct = MixedLMRegressor().fit(X, y, groups=g)
    frame = pd.DataFrame({"school": g, "a": 3 * X[:, 0] + 1, "b": X[:, 1]})
    scale = ColumnTransformer(
        [("scale", StandardScaler(), ["a", "b"])], remainder="passthrough", verbose_feature_names_out=False
    ).set_output(transform="pandas")  # a DataFrame out: the label column keeps its name and strings
    pipe = make_pipeline(scale, MixedLMRegressor(group_col="school")).fit(frame, y)
    # The mixed fit is affine-invariant in X: the same predictions as without scaling.
    np.testing.assert_allclose(pipe.predict(frame), direct.predict(X, groups=g), atol=1e-6)
    # Arrays: passthrough first, so that the labels are column 0 of what the estimator gets.
    first = ColumnTransformer([("labels", "passthrough", [0]), ("scale", StandardScaler(), [1, 2])])
    array_pipe = make_pipeline(first, MixedLMRegressor(group_col=0)).fit(with_codes(X, g), y)
    np.testing.assert_allclose(array_pipe.predict(with_codes(X, g)), direct.predict(X, groups=g), atol=1e-6)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not seen in fitting")
        scores = cross_val_score(pipe, frame, y, groups=g, cv=GroupKFold(3))
    assert np.all(scores > 0.3)


def test_group_col_under_metadata_routing(data):
    X, y, g = data
    frame = pd.DataFrame({"school": g, "a": X[:, 0], "b": X[:, 1]})
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not seen in fitting")
        # groups go to the splitter; fit requests none with group_col, so none reach it twice.
        routed = cross_validate(
            MixedLMRegressor(group_col="school"), frame, y, cv=GroupKFold(4), params={"groups": g}
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not seen in fitting")
        plain = cross_val_score(MixedLMRegressor(group_col="school"), frame, y, groups=g, cv=GroupKFold(4))
    np.testing.assert_allclose(routed["test_score"], plain, rtol=1e-10)


def test_group_col_in_the_em_and_network_estimators(data):
    X, y, g = data
    Xg = with_codes(X, g)
    em = MixedEMRegressor(LinearRegression(), group_col=0).fit(Xg, y)
    direct = MixedEMRegressor(LinearRegression()).fit(X, y, groups=g)
    np.testing.assert_allclose(em.predict(Xg), direct.predict(X, groups=g), atol=1e-8)
    nn = MixedNNRegressor(width=4, max_epochs=20, patience=20, group_col=0).fit(Xg, y)
    assert nn.model_ is not None and nn.n_features_in_ == 3
    restored = pickle.loads(pickle.dumps(nn))  # the network is rebuilt with the 2 features
    np.testing.assert_array_equal(restored.predict(Xg), nn.predict(Xg))


# ------------------------------------------------------------------ cross_validate_mixed


def test_cross_validate_mixed_rows_and_groups(data):
    X, y, g = data
    frame = cross_validate_mixed(MixedLMRegressor(), pd.DataFrame(X), y, g, cv="rows", n_splits=4)
    assert list(frame.columns) == [
        "fold", "split", "mse_within", "mse_out", "mse_plain", "mse_plain_onehot", "seconds",
    ]  # fmt: skip
    assert len(frame) == 8 and list(frame.split) == ["train", "test"] * 4
    assert list(frame.fold) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert np.all(frame.mse_within < frame.mse_out)  # train and test rows: clusters seen
    assert np.all(frame.mse_plain_onehot < frame.mse_plain)
    assert np.all(frame.seconds > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unseen-cluster warning is silenced inside
        grouped = cross_validate_mixed(MixedLMRegressor(), X, y, g, cv="groups", n_splits=4)
    test, train = grouped[grouped.split == "test"], grouped[grouped.split == "train"]
    np.testing.assert_allclose(test.mse_within, test.mse_out, rtol=1e-12)  # unseen clusters
    assert np.all(train.mse_within < train.mse_out)
    custom = cross_validate_mixed(MixedLMRegressor(), X, y, g, cv=GroupKFold(4))
    pd.testing.assert_frame_equal(custom.drop(columns="seconds"), grouped.drop(columns="seconds"))


# ------------------------------------------------------------------ EM and networks


def test_mixed_em_recovers_fit_reml():
    X, y, g = simulate(n_groups=100, per_group=8, beta=(1.5, -0.5, 0.8), sd_group=1.2, seed=2)
    em = MixedEMRegressor(LinearRegression()).fit(X, y, groups=g)
    ref = MixedLMRegressor().fit(X, y, groups=g).results_
    intercept = em.estimator_.intercept_ + em.model_.intercept
    assert abs(intercept - ref.fixed_effects["(Intercept)"]) < 0.05
    np.testing.assert_allclose(em.estimator_.coef_, ref.fixed_effects.iloc[1:].to_numpy(), atol=0.05)
    np.testing.assert_allclose(em.model_.varcorr.vcov, ref.varcorr.vcov, rtol=0.10)
    assert isinstance(em.plain_estimator(), LinearRegression) and em.plain_estimator() is not em.estimator


def test_nn_regressor_learns_a_curve_and_stops_early():
    rng = np.random.default_rng(4)
    X = rng.uniform(-2, 2, size=(300, 1))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.normal(size=300)
    nn = NNRegressor(learning_rate=0.01, max_epochs=2000, patience=50).fit(X, y)
    assert nn.score(X, y) > 0.9 > LinearRegression().fit(X, y).score(X, y)
    assert nn.best_epoch_ <= nn.n_epochs_ <= 2000 and list(nn.history_.columns) == [
        "epoch", "train_mse", "valid_mse",
    ]  # fmt: skip
    restored = pickle.loads(pickle.dumps(nn))
    np.testing.assert_array_equal(restored.predict(X), nn.predict(X))


def test_mixed_nn_regressor_contract(data):
    X, y, g = data
    frame = pd.DataFrame(X, columns=["a", "b"])
    est = MixedNNRegressor(width=8, learning_rate=0.01, max_epochs=200, patience=50).fit(frame, y, groups=g)
    assert list(est.feature_names_in_) == ["a", "b"]
    assert est.model_.varcorr.vcov.iloc[0] > 0.5  # the simulated group variance is 2.25
    assert est.score(frame, y, groups=g) > est.score(frame, y) + 0.1
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict(frame, groups=g), est.predict(frame, groups=g))
    plain = est.plain_estimator()
    assert isinstance(plain, NNRegressor) and plain.get_params()["width"] == 8


def test_nn_regressor_reports_why_it_stopped():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 2))
    y = X[:, 0] + 0.1 * rng.normal(size=80)
    capped = NNRegressor(width=4, max_epochs=30, validation_fraction=0.0).fit(X, y)
    assert capped.result_ == jm.core.RESULTS.max_steps_reached
    assert capped.n_epochs_ == capped.best_epoch_ == 30
    with pytest.warns(RuntimeWarning, match="non-finite"):
        broken = NNRegressor(width=4, learning_rate=1e200, max_epochs=30).fit(X, y)
    assert broken.result_ == jm.core.RESULTS.nonfinite and broken.n_epochs_ < 30
    assert np.isfinite(broken.predict(X)).all()  # the best earlier (here: the initial) network
    restored = pickle.loads(pickle.dumps(broken))
    assert restored.result_ == jm.core.RESULTS.nonfinite

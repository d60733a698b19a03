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
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_validate  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
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

# scikit-learn's checks call fit(X, y) without groups: this runs the documented
# fit of the fixed part alone (NoGroupsWarning). GroupedLM / GroupedEM below run
# a selection of the checks on the mixed fit itself.
CHECKED = [
    MixedLMRegressor(),
    MixedEMRegressor(LinearRegression()),
    NNRegressor(**FAST_NN),
    MixedNNRegressor(**FAST_NN),
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


def test_fit_without_groups_fits_the_fixed_part_and_warns(data):
    X, y, g = data
    with pytest.warns(NoGroupsWarning, match="no groups"):
        est = MixedLMRegressor().fit(X, y)
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

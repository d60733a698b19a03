"""fit_mixed_nn and fit_mixed_em against fit_reml, and their results and errors."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm

FORMULA = "y ~ x1 + x2 + x3 + (1 + x1 | g)"


def linear_data(n_groups=100, seed=0) -> pd.DataFrame:
    """y = 5 + x1 + x2 + x3 + b0 + b1·x1 + ε: random intercept (SD 1) and slope (SD 0.5)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), rng.integers(20, 26, n_groups))
    n = len(g)
    x = rng.normal(size=(n, 3))
    b = rng.normal(size=(n_groups, 2)) * [1.0, 0.5]
    y = 5 + x.sum(1) + b[g, 0] + b[g, 1] * x[:, 0] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "g": g})


@pytest.fixture(scope="module")
def data():
    return linear_data()


@pytest.fixture(scope="module")
def reference(data):
    return jm.fit_reml(FORMULA, data)


def _linear(key=0):
    return eqx.nn.Linear(3, "scalar", key=jax.random.key(key))


def _coefficients(result) -> np.ndarray:
    """Intercept and slopes of a fitted linear fixed part f(x) + β₀."""
    with jax.enable_x64(True):
        x0 = jnp.zeros(3, result.x_dtype)
        slopes = np.asarray(jax.grad(result.model)(x0)) if isinstance(result.model, jm.FixedPart) else None
        at0 = result.fixed_predict(np.zeros((1, 3)))[0]
    if slopes is None:
        slopes = np.asarray(result.model.coef_)
    return np.concatenate([[at0], slopes])


def _variances(result) -> np.ndarray:
    vc = result.varcorr
    return vc.loc[vc.var2.isna(), "vcov"].to_numpy()


def _check_recovers(result, reference):
    np.testing.assert_allclose(_coefficients(result), reference.fixed_effects.to_numpy(), atol=0.05)
    np.testing.assert_allclose(_variances(result), _variances(reference), rtol=0.10)


@pytest.mark.parametrize("mode", ["joint", "em"])
def test_linear_network_recovers_fit_reml(data, reference, mode):
    options = jm.TrainOptions(mode=mode, validation_fraction=0.0, max_epochs=1500)
    result = jm.fit_mixed_nn(_linear(), FORMULA, data, options=options, verbose=False)
    _check_recovers(result, reference)
    assert result.converged and not result.singular


def test_em_around_linear_regression_recovers_fit_reml(data, reference):
    linear_model = pytest.importorskip("sklearn.linear_model")
    result = jm.fit_mixed_em(linear_model.LinearRegression(), FORMULA, data, verbose=False)
    _check_recovers(result, reference)
    assert result.stopped.startswith("converged")
    assert result.history.gll.iloc[-1] <= result.history.gll.iloc[0]


def test_default_training_keeps_the_best_held_out_epoch(data):
    mlp = eqx.nn.MLP(3, "scalar", 16, 2, activation=jax.nn.relu, key=jax.random.key(1))
    result = jm.fit_mixed_nn(mlp, FORMULA, data, max_epochs=300, key=jax.random.key(0), verbose=False)
    hist = result.history
    assert hist.loss.iloc[-1] < hist.loss.iloc[0]  # joint training decreases its loss
    assert result.best_epoch == int(hist.epoch[hist.valid_mse.idxmin()])
    again = jm.fit_mixed_nn(mlp, FORMULA, data, max_epochs=300, key=jax.random.key(0), verbose=False)
    np.testing.assert_array_equal(again.fitted, result.fitted)  # same key, same fit


def test_random_part_is_the_exact_fit_of_the_residual(data):
    """varcorr, σ and b̂ are the core's REML fit of y − f(x) (intercept only), all rows."""
    result = jm.fit_mixed_nn(_linear(), FORMULA, data, max_epochs=200, verbose=False)
    with jax.enable_x64(True):
        f = np.asarray(jax.vmap(result.model)(jnp.asarray(data[["x1", "x2", "x3"]].to_numpy())))
    resid = data.assign(r=data.y - f)
    direct = jm.fit_reml("r ~ 1 + (1 + x1 | g)", resid)
    assert result.random_model.objective == pytest.approx(direct.objective, rel=1e-8)
    assert result.sigma == pytest.approx(direct.sigma, rel=1e-5)
    np.testing.assert_allclose(result.random_effects["g"], direct.random_effects["g"], rtol=1e-4, atol=1e-6)


def test_predict(data):
    result = jm.fit_mixed_nn(_linear(), FORMULA, data, max_epochs=100, verbose=False)
    np.testing.assert_allclose(result.predict(data), result.fitted, rtol=1e-10)
    np.testing.assert_allclose(result.predict(data, include_random=False), result.fitted_fixed, rtol=1e-10)
    new = data.iloc[:5].assign(g=[1000, 1000, 0, 1001, 0])
    with pytest.warns(UserWarning, match=r"3 row\(s\) have levels of 'g' not seen"):
        pred = result.predict(new)
    fixed = result.predict(new, include_random=False)
    np.testing.assert_allclose(pred[[0, 1, 3]], fixed[[0, 1, 3]])
    assert not np.allclose(pred[[2, 4]], fixed[[2, 4]])


def test_several_factors_and_uncorrelated_terms(data):
    df = data.assign(h=np.arange(len(data)) % 7)
    result = jm.fit_mixed_nn(
        _linear(), "y ~ x1 + x2 + x3 + (x1 || g) + (1 | h)", df, mode="em", max_epochs=200, verbose=False
    )
    assert list(result.varcorr.grp) == ["g", "g.1", "h", "Residual"]
    assert np.isfinite(result.varcorr.vcov).all()
    assert set(result.random_effects) == {"g", "h"}


def test_minibatches_of_groups_fit(data, reference):
    options = jm.TrainOptions(
        batch_groups=25, validation_fraction=0.0, max_epochs=400, phi_learning_rate=0.01
    )
    result = jm.fit_mixed_nn(_linear(), FORMULA, data, options=options, verbose=False)
    np.testing.assert_allclose(_coefficients(result), reference.fixed_effects.to_numpy(), atol=0.05)
    np.testing.assert_allclose(_variances(result), _variances(reference), rtol=0.10)
    assert len(result.history) == 40


def test_float32(data, reference):
    options = jm.TrainOptions(validation_fraction=0.0, max_epochs=1500)
    result = jm.fit_mixed_nn(_linear(), FORMULA, data, options=options, dtype=jnp.float32, verbose=False)
    np.testing.assert_allclose(_coefficients(result), reference.fixed_effects.to_numpy(), atol=0.05)


def test_progress_lines_without_tqdm(capsys, monkeypatch):
    import builtins

    from jaxmixed.core._progress import Progress

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    bar = Progress(100, "epoch", verbose=True)
    bar.start -= 2.0  # as if the fit had run for two seconds
    bar.update(10, loss=1.5)
    bar.close()
    assert "epoch 10/100 loss=1.5" in capsys.readouterr().err
    quiet = Progress(100, "epoch", verbose=False)
    quiet.start -= 2.0
    quiet.update(10, loss=1.5)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ bad input


def test_model_with_wrong_output_shape(data):
    with pytest.raises(ValueError, match=r"to a scalar .* returned shape \(2,\)"):
        jm.fit_mixed_nn(eqx.nn.Linear(3, 2, key=jax.random.key(0)), FORMULA, data, verbose=False)


def test_model_with_wrong_input_size(data):
    with pytest.raises(
        ValueError, match=r"could not be applied to one row of the 3 features \['x1', 'x2', 'x3'\]"
    ):
        jm.fit_mixed_nn(eqx.nn.Linear(5, "scalar", key=jax.random.key(0)), FORMULA, data, verbose=False)


def test_features_with_nan(data):
    bad = data.copy()
    bad.loc[3, "x2"] = np.nan
    with pytest.raises(ValueError, match=r"missing or non-finite values in used column\(s\) \('x2': 1 row"):
        jm.fit_mixed_nn(_linear(), FORMULA, bad, verbose=False)


def test_estimator_without_fit_or_predict(data):
    class OnlyFit:
        def fit(self, X, y):
            return self

    with pytest.raises(TypeError, match=r"has no predict\(\)"):
        jm.fit_mixed_em(OnlyFit(), FORMULA, data, verbose=False)
    with pytest.raises(TypeError, match=r"has no fit\(\)"):
        jm.fit_mixed_em(object(), FORMULA, data, verbose=False)


def test_estimator_predicting_the_wrong_shape(data):
    class Broken:
        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.zeros((len(X), 2))

    with pytest.raises(ValueError, match=r"predict returned shape"):
        jm.fit_mixed_em(Broken(), FORMULA, data, verbose=False)


def test_other_bad_settings(data):
    with pytest.raises(ValueError, match="names no features"):
        jm.fit_mixed_nn(_linear(), "y ~ 1 + (1 | g)", data, verbose=False)
    with pytest.raises(ValueError, match="mode must be 'joint' or 'em'"):
        jm.fit_mixed_nn(_linear(), FORMULA, data, mode="sgd", verbose=False)
    df = data.assign(h=np.arange(len(data)) % 7)
    with pytest.raises(ValueError, match="batch_groups needs one grouping factor"):
        options = jm.TrainOptions(batch_groups=10)
        jm.fit_mixed_nn(_linear(), "y ~ x1 + x2 + x3 + (1 | g) + (1 | h)", df, options=options, verbose=False)
    with pytest.raises(ValueError, match="given both as arguments and"):
        jm.fit_mixed_nn(_linear(), FORMULA, data, reml=False, options=jm.TrainOptions(), verbose=False)
    with pytest.raises(ValueError, match="validation_fraction"):
        options = jm.TrainOptions(validation_fraction=1.0)
        jm.fit_mixed_nn(_linear(), FORMULA, data, options=options, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jm.fit_mixed_nn(_linear(), FORMULA, data, max_epochs=10, verbose=False)  # no stray warnings


def test_em_with_an_interpolating_estimator_says_so(data):
    class Interpolate:
        """Remembers the training response: a fixed part with no residual."""

        def fit(self, X, y):
            self.table = {tuple(r): v for r, v in zip(np.round(X, 12), y, strict=True)}
            return self

        def predict(self, X):
            return np.asarray([self.table.get(tuple(r), 0.0) for r in np.round(X, 12)])

    with pytest.raises(RuntimeError, match="reproduces the training response exactly"):
        jm.fit_mixed_em(Interpolate(), FORMULA, data, verbose=False)


# ------------------------------------------------------------------ why training stopped


def test_training_stops_are_results_items(data):
    from jaxmixed.core import RESULTS
    from jaxmixed.core._status import is_converged

    small = data[data.g < 30]
    mlp = eqx.nn.MLP(3, "scalar", 16, 2, activation=jax.nn.relu, key=jax.random.key(1))
    options = jm.TrainOptions(patience=20, learning_rate=0.05, max_epochs=2000)
    patient = jm.fit_mixed_nn(mlp, FORMULA, small, options=options, verbose=False)
    assert patient.result == RESULTS.early_stopped
    assert patient.stopped.startswith("early stopping") and "20 epochs" in patient.stopped
    assert patient.history.epoch.iloc[-1] - patient.best_epoch >= 20
    limited = jm.fit_mixed_nn(_linear(), FORMULA, small, max_epochs=30, verbose=False)
    assert limited.result == RESULTS.max_steps_reached and "max_epochs" in limited.stopped
    linear_model = pytest.importorskip("sklearn.linear_model")
    em = jm.fit_mixed_em(linear_model.LinearRegression(), FORMULA, small, verbose=False)
    assert em.result == RESULTS.small_change and em.stopped.startswith("converged")
    assert is_converged(em.result) and not is_converged(patient.result)
    capped = jm.fit_mixed_em(linear_model.LinearRegression(), FORMULA, small, max_rounds=2, verbose=False)
    assert capped.result == RESULTS.max_steps_reached and "max_rounds" in capped.stopped


def _fake_run(losses, held_out=None, initial=None, patience=30):
    """run_training over checks whose training loss is ``losses[k]`` (and held-out ``held_out[k]``)."""
    from jaxmixed.networks._loop import Check, Schedule, run_training

    def advance(k, epoch):
        i = epoch // 10 - 1
        valid = None if held_out is None else held_out[i]
        return Check({"epoch": epoch}, losses[i], valid, f"model at {epoch}")

    schedule = Schedule(10 * len(losses), 10, patience)
    return run_training(advance, schedule, held_out=held_out is not None, verbose=False, initial=initial)


def test_the_training_loop_says_why_it_stopped():
    from jaxmixed.core import RESULTS

    last = _fake_run([3.0, 2.0, 1.0])
    assert (last.result, last.model, last.epochs) == (RESULTS.max_steps_reached, "model at 30", 30)
    patient = _fake_run([1.0] * 8, held_out=[5.0, 4.0, 4.5, 4.4, 4.3, 4.2, 4.1, 4.0])
    assert patient.result == RESULTS.early_stopped
    assert (patient.model, patient.best_epoch, patient.epochs) == ("model at 20", 20, 50)
    broken = _fake_run([2.0, 1.0, np.nan, 0.5])
    assert broken.result == RESULTS.nonfinite and broken.model == "model at 20" and broken.epochs == 30
    assert "non-finite at epoch 30" in broken.stopped and "kept the state of epoch 20" in broken.stopped
    assert len(broken.history) == 3  # the failed check is recorded
    with pytest.raises(RuntimeError, match="non-finite at epoch 10 .*before any usable state"):
        _fake_run([np.inf, 1.0])
    kept = _fake_run([np.inf, 1.0], initial="initial model")  # as NNRegressor: the initial network
    assert (kept.result, kept.model, kept.best_epoch) == (RESULTS.nonfinite, "initial model", 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reml": "no"}, "reml must be True"),
        ({"mode": "foo"}, "mode must be 'joint' or 'em'"),
        ({"variance_update": "x"}, "variance_update must be 'profiled' or 'em'"),
        ({"max_epochs": -5}, "max_epochs must be a positive integer"),
        ({"patience": True}, "patience must be a positive integer"),
        ({"validation_fraction": 2.0}, r"validation_fraction must be in \[0, 1\)"),
        ({"learning_rate": 0.0}, "learning_rate must be a positive number"),
        ({"batch_groups": 0}, "batch_groups must be a positive integer"),
        ({"mode": "em", "batch_groups": 4}, "applies to mode='joint'"),
        ({"optimizer": "adam"}, "optimizer must be an optax"),
    ],
)
def test_train_options_validate_themselves(kwargs, match):
    """Checked when the options are made, before any training (reml="no" used to train as REML)."""
    with pytest.raises((TypeError, ValueError), match=match):
        jm.TrainOptions(**kwargs)


def test_output_layer_solve_is_least_squares(data):
    """The EM round's output-layer solve against numpy's least squares on the features
    (a linear network: the features are x; an MLP: its last hidden layer)."""
    from jaxmixed.networks._plain import _last_linear, _solve_last_layer

    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(50, 3))
    target_np = x_np @ np.array([1.0, -2.0, 0.5]) + 3.0 + rng.normal(size=50) * 0.1
    with jax.enable_x64(True):
        x, target = jnp.asarray(x_np), jnp.asarray(target_np)
        train = type("Rows", (), {})()  # the fields of a TrainingSet the solve reads
        train.x, train.mask, train.n_obs = x, jnp.asarray(np.arange(50) < 45), jnp.asarray(45.0)  # 5 padded
        model = eqx.nn.Linear(3, "scalar", dtype=jnp.float64, key=jax.random.key(0))
        assert _last_linear(model) is model
        solved, before, after = _solve_last_layer(model, train, target)
        a = np.c_[np.asarray(x)[:45], np.ones(45)]
        coef, *_ = np.linalg.lstsq(a, np.asarray(target)[:45], rcond=None)
        np.testing.assert_allclose(np.r_[np.asarray(solved.weight).ravel(), np.asarray(solved.bias)], coef, rtol=1e-8)
        assert float(after) < float(before)
        mlp = eqx.nn.MLP(3, "scalar", 8, 1, dtype=jnp.float64, key=jax.random.key(2))
        solved, _, after = _solve_last_layer(mlp, train, target)
        hidden = np.asarray(jax.vmap(lambda r: jax.nn.relu(mlp.layers[0](r)))(x))[:45]
        coef, res, *_ = np.linalg.lstsq(np.c_[hidden, np.ones(45)], np.asarray(target)[:45], rcond=None)
        assert float(after) == pytest.approx(float(res[0]) / 45, rel=1e-8)
    assert _last_linear(eqx.nn.MLP(3, 2, 8, 1, key=jax.random.key(0))) is None  # not a scalar


def test_em_with_early_stopping_settles_the_variance_components():
    """A linear network by EM with the default options (10% held out, early stopping):
    every sd within 3% of fit_reml's (it ended 51% off when EM stopped on the held-out
    rows while its network was still learning the slopes)."""
    xs = " + ".join(f"x{k}" for k in range(1, 11))
    MIXEDML = f"y ~ {xs} + w1 + w2 + w3 + (1 + {xs} | cluster)"  # the mixedML benchmark's model
    df = jm.mixedml_simulation(seed=1)
    reference = jm.fit_reml(MIXEDML, df)
    linear = eqx.nn.MLP(13, "scalar", 32, 0, key=jax.random.key(0))
    result = jm.fit_mixed_nn(linear, MIXEDML, df, mode="em", key=0, verbose=False)
    assert result.stopped.startswith("converged")

    def sds(fit, sigma):
        lam = np.asarray(fit.lambdas[0])
        return sigma * np.sqrt(np.diag(lam @ lam.T))

    ratio = sds(result.random_model.fit_result, result.sigma) / sds(reference.fit_result, reference.sigma)
    np.testing.assert_allclose(ratio, 1.0, atol=0.03)

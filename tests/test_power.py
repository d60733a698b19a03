"""Power by simulation (jaxmixed.linear._power, _extend; core._inference.satterthwaite_masked)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import jaxmixed as jm
from jaxmixed.core._compile import compiled
from jaxmixed.core._compile import unoptimised_on_cpu as _compiler_options
from jaxmixed.core._inference import satterthwaite, satterthwaite_masked
from jaxmixed.core._simulate import simulate_draws
from jaxmixed.core._statistics import model_statistics
from jaxmixed.design._prepare import prepare
from jaxmixed.linear._bootstrap import as_jax
from jaxmixed.linear._extend import extend_design
from jaxmixed.linear._power import clopper_pearson, make_scenario

# Compiled as coef_table compiles them (XLA's backend optimisation off on a CPU): run op
# by op, or fully optimised, the derivative programs take most of a minute.
_masked = compiled(satterthwaite_masked, compiler_options=_compiler_options)
_static = compiled(satterthwaite, compiler_options=_compiler_options)


def _vmapped_df(stats, phis, masks, contrasts):
    return jax.vmap(lambda p, m: satterthwaite_masked(stats, p, m, True, contrasts).df)(phis, masks)


_jit_vmapped_df = compiled(_vmapped_df, compiler_options=_compiler_options)

FORMULA = "Reaction ~ Days + (Days | Subject)"
NULL_FORMULA = "Reaction ~ 1 + (Days | Subject)"
BATCH = 128  # one chunk size for every run here: one compiled program per test kind


@pytest.fixture(scope="module")
def sleep():
    return jm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return jm.fit_reml(FORMULA, sleep)


@pytest.fixture(scope="module", params=["lrt", "satterthwaite"])
def null_power(request, sleep_fit):
    return sleep_fit.power("Days", 0.0, n_sim=512, test=request.param, key=3, batch_size=BATCH)


def _mc_bound(p: float, n: int) -> float:
    """Four binomial standard deviations of a proportion of n trials."""
    return 4.0 * np.sqrt(p * (1 - p) / n)


def test_power_at_effect_zero_is_the_level(null_power):
    assert null_power.n_sim == 512 and null_power.n_failed == 0
    assert null_power.n_unconverged == 0
    assert abs(null_power.power - 0.05) < _mc_bound(0.05, 512)
    lower, upper = null_power.conf_int()
    assert lower < null_power.power < upper
    assert null_power.successes == int(np.sum(null_power.p_values < 0.05))
    assert np.all((null_power.p_values >= 0) & (null_power.p_values <= 1))
    # Under H0 the p-values are roughly uniform.
    assert abs(np.mean(null_power.p_values) - 0.5) < _mc_bound(0.5, 512) / np.sqrt(3)


@pytest.mark.parametrize("test", ["lrt", "satterthwaite"])
def test_a_large_effect_has_power_one(sleep_fit, test):
    result = sleep_fit.power("Days", 40.0, n_sim=BATCH, test=test, key=0, batch_size=BATCH)
    assert result.power == 1.0 and result.n_valid == BATCH
    assert result.conf_int()[1] == 1.0


def _simulated(sleep_fit, effect: float, key: int, n: int) -> np.ndarray:
    """The responses of replicates 0 … n−1 of ``power(..., key=key)``."""
    with jax.enable_x64(True):
        fitted = as_jax(sleep_fit.fit_result, np.float64)
        levels = [f.n_levels for f in sleep_fit.design.factors]
        column = list(sleep_fit.design.fixed_names).index("Days")
        scenario = make_scenario(
            sleep_fit.design, sleep_fit.arrays, levels, fitted, column=column, effect=effect, test="satterthwaite"
        )
        return np.asarray(simulate_draws(jax.random.key(key), jnp.arange(n), scenario.data, scenario.truth))


def test_satterthwaite_p_values_equal_eager_refits(sleep, sleep_fit):
    result = sleep_fit.power("Days", 3.0, n_sim=BATCH, test="satterthwaite", key=5, batch_size=BATCH)
    for k, y in enumerate(_simulated(sleep_fit, 3.0, 5, 3)):
        refit = jm.fit_reml(FORMULA, sleep.assign(Reaction=y))
        assert result.p_values[k] == pytest.approx(refit.coef_table().loc["Days", "Pr(>|t|)"], abs=1e-6)


def test_lrt_p_values_equal_eager_anova(sleep, sleep_fit):
    result = sleep_fit.power("Days", 3.0, n_sim=BATCH, test="lrt", key=5, batch_size=BATCH)
    for k, y in enumerate(_simulated(sleep_fit, 3.0, 5, 3)):
        data = sleep.assign(Reaction=y)
        full = jm.fit_reml(FORMULA, data, reml=False)
        null = jm.fit_reml(NULL_FORMULA, data, reml=False)
        table = jm.anova(null, full)
        assert result.p_values[k] == pytest.approx(table["Pr(>Chisq)"].iloc[1], abs=1e-6)


def test_the_same_key_gives_the_same_simulation(sleep_fit, null_power):
    again = sleep_fit.power("Days", 0.0, n_sim=512, test=null_power.test, key=3, batch_size=BATCH)
    # Equal up to round-off: the order of XLA's threaded sums may differ between runs.
    np.testing.assert_allclose(again.p_values, null_power.p_values, rtol=1e-10)
    other = sleep_fit.power("Days", 0.0, n_sim=BATCH, test=null_power.test, key=4, batch_size=BATCH)
    assert not np.allclose(other.p_values, null_power.p_values[:BATCH])
    np.testing.assert_allclose(  # replicate k is fold_in(key, k): a prefix of a longer run
        sleep_fit.power("Days", 0.0, n_sim=BATCH, test=null_power.test, key=3, batch_size=BATCH).p_values,
        null_power.p_values[:BATCH],
        rtol=1e-10,
    )


@pytest.mark.parametrize(("x", "n"), [(0, 20), (1, 20), (5, 100), (50, 100), (99, 100), (100, 100), (37, 1000)])
def test_clopper_pearson_matches_the_beta_quantiles(x, n):
    lower, upper = clopper_pearson(x, n)
    want_lower = 0.0 if x == 0 else sps.beta.ppf(0.025, x, n - x + 1)
    want_upper = 1.0 if x == n else sps.beta.ppf(0.975, x + 1, n - x)
    assert lower == pytest.approx(want_lower, abs=1e-12)
    assert upper == pytest.approx(want_upper, abs=1e-12)


def test_clopper_pearson_known_value():
    # R: binom.test(5, 100)$conf.int
    assert clopper_pearson(5, 100) == pytest.approx((0.01643187, 0.11283491), abs=1e-8)


def test_satterthwaite_masked_vmaps_over_boundary_patterns(sleep_fit):
    """Each pattern of the masked form gives the df of the static one with those entries free."""
    with jax.enable_x64(True):
        data = prepare(sleep_fit.design, sleep_fit.arrays)
        stats = model_statistics(data, jnp.asarray(sleep_fit.arrays.y))
        phi = jnp.asarray(sleep_fit.fit_result.phi)
        contrasts = jnp.eye(2)
        masks = jnp.asarray([[False, False, False], [False, False, True]])
        phis = jnp.where(masks, -jnp.inf, phi)
        got = _jit_vmapped_df(stats, phis, masks, contrasts)
        for k, mask in enumerate(np.asarray(masks)):
            free = tuple(int(i) for i in np.flatnonzero(~mask))
            want = _static(stats, jnp.asarray(phis[k]), free, True, contrasts).df
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want), rtol=1e-9)


def test_satterthwaite_masked_on_a_singular_fit():
    fit = jm.fit_reml("Yield ~ 1 + (1 | Batch)", jm.load_dataset("Dyestuff2"))
    assert fit.singular
    with jax.enable_x64(True):
        stats = model_statistics(prepare(fit.design, fit.arrays), jnp.asarray(fit.arrays.y))
        out = _masked(
            stats, jnp.asarray(fit.fit_result.phi), jnp.asarray(fit.fit_result.at_boundary), True, jnp.eye(1)
        )
    np.testing.assert_allclose(np.asarray(out.df), fit.coef_table()["df"].to_numpy(), rtol=1e-9)


# ---------------------------------------------------------------- along: designs grown or cut


def test_extend_along_a_factor_cuts_and_copies_levels(sleep_fit):
    design, arrays = sleep_fit.design, sleep_fit.arrays
    cut = extend_design(design, arrays, "Subject", 5)
    assert cut.n_levels == (5,) and len(cut.arrays.y) == 50
    grown = extend_design(design, arrays, "Subject", 30)
    assert grown.n_levels == (30,) and len(grown.arrays.y) == 300
    codes = grown.arrays.codes[0]
    assert sorted(np.unique(codes)) == list(range(30))
    # New level 18 copies level 0's rows (covariates and Z).
    first = arrays.codes[0] == 0
    np.testing.assert_array_equal(grown.arrays.X[codes == 18], arrays.X[first])
    np.testing.assert_array_equal(grown.arrays.Z[0][codes == 18], arrays.Z[0][first])


def test_extend_along_a_covariate_keeps_its_smallest_values(sleep_fit):
    cut = extend_design(sleep_fit.design, sleep_fit.arrays, "Days", 3)
    days = cut.arrays.X[:, list(sleep_fit.design.fixed_names).index("Days")]
    assert set(days) == {0.0, 1.0, 2.0} and len(days) == 54 and cut.n_levels == (18,)
    with pytest.raises(ValueError, match="distinct values"):
        extend_design(sleep_fit.design, sleep_fit.arrays, "Days", 11)


def test_extend_a_factor_grows_the_factors_nested_in_it():
    design, arrays = jm.design.build_design("strength ~ 1 + (1 | batch/cask)", jm.load_dataset("Pastes"))
    names = [f.name for f in design.factors]
    grown = extend_design(design, arrays, "batch", 12)
    levels = dict(zip(names, grown.n_levels, strict=True))
    assert levels == {"cask:batch": 36, "batch": 12}


def test_power_curve_along_subjects(sleep_fit):
    curve = sleep_fit.power("Days", 5.0, n_sim=BATCH, key=1, along="Subject", sizes=[6, 12], batch_size=BATCH)
    assert isinstance(curve, jm.PowerCurve)
    assert [r.n_levels["Subject"] for r in curve.results] == [6, 12]
    assert [r.nobs for r in curve.results] == [60, 120]
    table = curve.table
    assert list(table.columns[:4]) == ["size", "power", "lower", "upper"]
    assert list(table["size"]) == [6, 12]
    assert np.all((table["lower"] <= table["power"]) & (table["power"] <= table["upper"]))
    assert table["power"].iloc[1] > table["power"].iloc[0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"term": "Nope"}, "not a fixed effect"),
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"n_sim": 0}, "n_sim must be a positive"),
        ({"n_sim": 2.5}, "n_sim must be a positive"),
        ({"test": "wald"}, "test must be one of"),
        ({"effect": float("nan")}, "effect must be a finite"),
        ({"along": "Subject"}, "along and sizes go together"),
        ({"along": "Nope", "sizes": [3]}, "neither a grouping factor"),
        ({"along": "Subject", "sizes": [1]}, "sizes must be"),
        ({"batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_input_is_a_clear_error(sleep_fit, kwargs, message):
    args = {"term": "Days", "effect": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        sleep_fit.power(args.pop("term"), args.pop("effect"), **args)


def test_a_size_that_leaves_a_column_constant_is_an_error():
    """Days cut to one value: the column is the intercept's multiple; the error names along and size."""
    fit = jm.fit_reml("Reaction ~ Days + (1 | Subject)", jm.load_dataset("sleepstudy"))
    with pytest.raises(ValueError, match=r"along='Days' at size 1.*rank 1"):
        extend_design(fit.design, fit.arrays, "Days", 1)

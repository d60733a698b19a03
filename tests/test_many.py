"""Many fits at once (jaxmixed.core._many, jaxmixed.linear._many_api): each equals its own fit_reml."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed import core
from jaxmixed.core._many import default_batch_size, device_free_bytes
from jaxmixed.core._padding import bucket, pad_data, stack_data

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_responses():
    """sleepstudy with six extra responses: noisy copies, one without subject
    variation (its optimum is at the boundary), one constant, one with a NaN."""
    df = jm.load_dataset("sleepstudy")
    rng = np.random.default_rng(3)
    extra = {f"r{k}": df.Reaction + rng.normal(scale=20.0, size=len(df)) for k in range(3)}
    extra["flat"] = 250.0 + 10.0 * df.Days + rng.normal(scale=30.0, size=len(df))
    extra["const"] = np.full(len(df), 3.0)
    extra["gap"] = df.Reaction.copy()
    extra["gap"].iloc[7] = np.nan
    return df.assign(**extra), list(extra)


@pytest.fixture(scope="module")
def many_table(sleep_responses):
    data, names = sleep_responses
    with warnings.catch_warnings():
        warnings.simplefilter("error", jm.ConvergenceWarning)  # the flagged ones must not warn
        return jm.fit_reml_many(FORMULA, data, responses=names, verbose=False)


def test_each_response_equals_its_own_fit(sleep_responses, many_table):
    data, names = sleep_responses
    singular_seen = False
    for name in ["r0", "r1", "r2", "flat"]:
        one = jm.fit_reml(f"{name} ~ Days + (Days | Subject)", data)
        row = many_table.loc[name]
        assert row.objective == pytest.approx(one.objective, rel=1e-8)
        assert bool(row.converged) and bool(row.singular) == one.singular
        np.testing.assert_allclose(row[["(Intercept)", "Days"]].astype(float), one.fixed_effects, rtol=1e-6)
        np.testing.assert_allclose(
            row[["se_(Intercept)", "se_Days"]].astype(float), one.fixed_effects_se, rtol=1e-5
        )
        sd = one.varcorr.sdcor.to_numpy()  # (Intercept) sd, Days sd, correlation, residual
        got = row[["sd_(Intercept)|Subject", "sd_Days|Subject", "cor_Days.(Intercept)|Subject", "sigma"]]
        np.testing.assert_allclose(got.astype(float), sd, rtol=1e-5, atol=1e-6)
        singular_seen |= one.singular
    assert singular_seen, "the 'flat' response should give a boundary fit"
    assert (
        many_table.loc["flat", "sd_Days|Subject"] == 0.0
        or many_table.loc["flat", "sd_(Intercept)|Subject"] == 0.0
    )


def test_unfittable_responses_are_flagged_not_fitted(many_table):
    assert not many_table.loc["const", "converged"]
    assert "nothing to fit" in many_table.loc["const", "message"]
    assert np.isnan(many_table.loc["const", "(Intercept)"])
    assert not many_table.loc["gap", "converged"]
    assert "1 missing or non-finite" in many_table.loc["gap", "message"]
    assert np.isnan(many_table.loc["gap", "objective"])
    assert many_table.index.name == "response" and list(many_table.index[-2:]) == ["const", "gap"]


def test_result_k_is_the_full_fit(sleep_responses, many_table):
    data, _ = sleep_responses
    res = many_table.result("r1")
    one = jm.fit_reml("r1 ~ Days + (Days | Subject)", data)
    assert isinstance(res, jm.MixedModelResults)
    assert res.formula == "r1 ~ Days + (Days | Subject)"
    assert res.objective == pytest.approx(one.objective, rel=1e-8)
    np.testing.assert_allclose(res.fitted, one.fitted, rtol=1e-6)
    np.testing.assert_allclose(
        res.random_effects["Subject"].to_numpy(),
        one.random_effects["Subject"].to_numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    assert res.convergence_message == "gradient below tolerance" or res.converged
    assert many_table.result(1).formula == res.formula  # by position as well
    with pytest.raises(IndexError):
        many_table.result(99)
    assert type(many_table[["objective"]]) is pd.DataFrame  # slices are plain frames


def test_chunks_give_the_same_fits(sleep_responses, many_table):
    """batch_size splits the work into chunks of one compiled shape; nothing changes."""
    data, names = sleep_responses
    chunked = jm.fit_reml_many(FORMULA, data, responses=names, batch_size=4, verbose=False)
    pd.testing.assert_frame_equal(
        chunked.drop(columns=["n_iter"]), many_table.drop(columns=["n_iter"]), rtol=1e-10
    )


def test_array_input_with_a_response_matrix():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(15), 6)
    x = rng.normal(size=len(groups))
    ys = 1.0 + x[:, None] + rng.normal(size=(15, 4))[groups] + rng.normal(size=(len(groups), 4))
    X = np.column_stack([np.ones_like(x), x])
    table = jm.fit_reml_many(y=ys, X=X, groups=groups, reml=False, verbose=False)
    assert list(table.index) == [0, 1, 2, 3]
    for k in range(4):
        one = jm.fit_reml(y=ys[:, k], X=X, groups=groups, reml=False)
        assert table.objective[k] == pytest.approx(one.objective, rel=1e-8)
        assert table["sd_(Intercept)|group"][k] == pytest.approx(one.varcorr.sdcor[0], rel=1e-5)
    frame = pd.DataFrame(ys, columns=["a", "b", "c", "d"])
    named = jm.fit_reml_many(y=frame, X=X, groups=groups, reml=False, verbose=False)
    assert list(named.index) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(named.objective.to_numpy(), table.objective.to_numpy(), rtol=1e-12)


def test_crossed_factors_many_responses():
    df = jm.load_dataset("Penicillin")
    rng = np.random.default_rng(1)
    ys = df.diameter.to_numpy()[:, None] + rng.normal(scale=0.5, size=(len(df), 3))
    table = jm.fit_reml_many("diameter ~ 1 + (1 | plate) + (1 | sample)", df, responses=ys, verbose=False)
    for k in range(3):
        one = jm.fit_reml("y ~ 1 + (1 | plate) + (1 | sample)", df.assign(y=ys[:, k]))
        assert table.objective[k] == pytest.approx(one.objective, rel=1e-8)
        assert table["sd_(Intercept)|sample"][k] == pytest.approx(one.varcorr.sdcor[1], rel=1e-5)


def test_bad_input_is_named():
    df = jm.load_dataset("sleepstudy")
    with pytest.raises(ValueError, match="not in the data"):
        jm.fit_reml_many(FORMULA, df, responses=["nope"])
    with pytest.raises(ValueError, match="responses is required"):
        jm.fit_reml_many(FORMULA, df)
    with pytest.raises(TypeError, match="list of column names"):
        jm.fit_reml_many(FORMULA, df, responses="Reaction")
    with pytest.raises(ValueError, match="rows"):
        jm.fit_reml_many(FORMULA, df, responses=np.ones((10, 2)))
    with pytest.raises(ValueError, match="multiple"):
        jm.fit_reml_many(FORMULA, df, responses=["Reaction"], batch_size=0)


def test_stacked_data_sets_equal_separate_fits():
    """Data sets of different sizes and levels, padded and stacked, fit as one."""
    df = jm.load_dataset("sleepstudy")
    sets = [df, df.iloc[:170], df[df.Subject.astype(str) != "308"].iloc[5:]]
    table = jm.fit_reml_stacked(FORMULA, sets, verbose=False)
    assert table.index.name == "dataset" and len(table) == 3
    for k, d in enumerate(sets):
        one = jm.fit_reml(FORMULA, d)
        assert table.objective[k] == pytest.approx(one.objective, rel=1e-8)
        res = table.result(k)
        assert res.nobs == len(d)
        assert res.random_effects["Subject"].shape == one.random_effects["Subject"].shape
        np.testing.assert_allclose(res.fixed_effects, one.fixed_effects, rtol=1e-6)


def test_stacked_crossed_designs_and_arrays():
    df = jm.load_dataset("Penicillin")
    sets = [df, df.iloc[:-6], df.sample(frac=0.9, random_state=2)]
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    table = jm.fit_reml_stacked(formula, sets, verbose=False)
    for k, d in enumerate(sets):
        assert table.objective[k] == pytest.approx(jm.fit_reml(formula, d).objective, rel=1e-8)
    rng = np.random.default_rng(4)
    groups = np.stack([rng.permutation(np.repeat(np.arange(10), 5)) for _ in range(3)])
    y = rng.normal(size=(3, 10))[np.arange(3)[:, None], groups] + rng.normal(size=(3, 50))
    arrays = jm.fit_reml_stacked(y=y, groups=groups, verbose=False)
    for k in range(3):
        assert arrays.objective[k] == pytest.approx(jm.fit_reml(y=y[k], groups=groups[k]).objective, rel=1e-8)


def test_stacked_rejects_different_models():
    df = jm.load_dataset("sleepstudy")
    with pytest.raises(ValueError, match="data set 1"):
        jm.fit_reml_stacked(FORMULA, [df, df.assign(Days=df.Days.astype(str))])


def test_padding_changes_nothing_in_the_statistics():
    """pad_data: extra rows, levels, cross entries and pairs add nothing."""
    df = jm.load_dataset("Penicillin")
    design, arrays = jm.design.build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", df)
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays)
        e, p = data.index.dense.n_entries, data.index.dense.n_pairs
        padded = pad_data(data, 160, n_levels=30, n_entries=e + 3, n_pairs=p + 5)
        y = jnp.asarray(arrays.y)
        y_pad = jnp.concatenate([y, jnp.zeros(160 - len(y))])
        phi = jnp.asarray([0.3, -0.2])
        base = core.objective(phi, core.model_statistics(data, y), True)
        stats_pad = core.model_statistics(padded, y_pad, None, jnp.asarray(float(len(y))))
        assert float(core.objective(phi, stats_pad, True)) == pytest.approx(float(base), rel=1e-12)
        with pytest.raises(ValueError, match="padded cross entry"):
            pad_data(data, 160, n_pairs=p + 1)
        stacked = stack_data([data, padded])
        assert stacked.X.shape == (2, 160, 1)


def test_batch_sizes():
    assert bucket(1000) == 1024 and bucket(17) == 18 and bucket(8) == 8
    assert default_batch_size(1000, 10**6, platform="gpu") == 536  # 512 MiB of 1 MB fits
    assert default_batch_size(5000, 100, platform="cpu") == 1024
    assert default_batch_size(5000, 100, platform="gpu") == 5120
    assert default_batch_size(10, 100) == 10
    assert default_batch_size(10, 100, multiple=4) == 12


def test_accelerator_batch_from_free_memory():
    """On an accelerator the budget is a share of the device's free memory. The stated
    case: an H100's pool (60 GB free), fits of 500 rows with two crossed factors
    (about 181 kB each by per_fit_bytes): chunks of 1,024 ran there and 4,096 failed."""
    per_fit = 8 * (8 * 500 + 12 * 100 * 1 * 3 + 6 * 50 * 50 + 64)
    size = default_batch_size(20_000, per_fit, platform="gpu", free_bytes=60 * 10**9)
    assert 1024 <= size < 4096
    assert default_batch_size(20_000, per_fit, platform="gpu", free_bytes=6 * 10**9) < 200  # a busier device
    # No figure reported (the CPU backend): the fixed budget.
    assert default_batch_size(1000, 10**6, platform="gpu", free_bytes=0) == 536
    free = device_free_bytes()
    assert free is None or free >= 0


def test_screened_first_pass_equals_the_full_fits(sleep_responses):
    """fit_reml_many fits without the boundary trials first and refits only the fits
    whose screen says a trial could change them: every fit equals the full fit."""
    from jaxmixed.core._many import jit_fit_responses

    data, _ = sleep_responses
    m = jm.fit_reml(FORMULA, data)
    sims = m.simulate(48, key=3)
    table = jm.fit_reml_many(FORMULA, data, responses=sims.T, batch_size=16, verbose=False)
    design, arrays = jm.design.build_design(FORMULA, data)
    with jax.enable_x64(True):
        stats = core.design_statistics(jm.design.prepare(design, arrays))
        full = jax.tree.map(np.asarray, jit_fit_responses(stats, jnp.asarray(sims), core.FitOptions()))
    assert full.singular.any(), "some replicates should be boundary fits"
    np.testing.assert_allclose(table.objective.to_numpy(), full.objective, rtol=1e-12)
    np.testing.assert_array_equal(table.singular.to_numpy(), full.singular)
    np.testing.assert_array_equal(table.n_iter.to_numpy(), full.n_iter)
    np.testing.assert_allclose(table.Days.to_numpy(), full.beta[:, 1], rtol=1e-10)

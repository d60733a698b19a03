"""Padding to bucket sizes (jaxmixed.core._padding): similar data sets share compiled code, no result changes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import jaxmixed as jm
from jaxmixed import core
from jaxmixed.core import _compile
from jaxmixed.core._padding import (
    DENSE_BITS,
    LINEAR_BITS,
    MIN_LEVELS,
    bucket,
    drop_padded_levels,
    pad_to_buckets,
    padded_levels,
)

# (dataset, formula, weights column or None): one factor with slopes and prior
# weights, crossed factors, nested factors, three factors (two in the dense block).
MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "w"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", None),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", None),
    ("insteval_first300", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", None),
]


def _data(name):
    if name == "insteval_first300":  # the first 300 students of lme4's InstEval (tests/data/README.md)
        factors = {c: str for c in ("s", "d", "service", "dept")}
        return pd.read_csv(DATA / "insteval_first300.csv", dtype=factors)
    df = jm.load_dataset(name)
    if name == "sleepstudy":
        df = df.assign(w=1.0 + (np.arange(len(df)) % 3))
    return df


@pytest.mark.parametrize(("name", "formula", "weights"), MODELS)
def test_padded_fit_equals_the_unpadded_fit(name, formula, weights):
    """Rows, levels of every factor, cross entries and pairs padded: the same fit."""
    design, arrays = jm.design.build_design(formula, _data(name), weights=weights)
    real = [f.n_levels for f in design.factors]
    with jax.enable_x64(True):
        plain = core.fit_data(jm.design.prepare(design, arrays), jnp.asarray(arrays.y))
        rows = jm.design.prepare(design, arrays, n_levels=[j + 5 for j in real])  # more than a bucket's worth
        padded = pad_to_buckets(rows, multiple=3)
        n = len(arrays.y)
        assert padded.X.shape[0] > n and padded.X.shape[0] % 3 == 0
        y = jnp.asarray(np.pad(arrays.y, (0, padded.X.shape[0] - n)))
        fitted = core.fit_data(padded, y, n_obs=jnp.asarray(float(n)))
    fitted = drop_padded_levels(jax.tree.map(np.asarray, fitted), real)
    plain = jax.tree.map(np.asarray, plain)
    assert float(fitted.objective) == pytest.approx(float(plain.objective), rel=1e-10)
    np.testing.assert_allclose(fitted.theta, plain.theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fitted.beta, plain.beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fitted.sigma, plain.sigma, rtol=1e-7)
    for got, want in zip(fitted.b, plain.b, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
    assert np.array_equal(fitted.at_boundary, plain.at_boundary)


def test_buckets():
    for n in [1, 7, 8, 9, 100, 170, 180, 1000, 73_421, 10**6 + 1]:
        for bits in (LINEAR_BITS, DENSE_BITS, 4):
            b = bucket(n, bits)
            assert n <= b <= n * (1 + 2.0 ** (1 - bits))
    assert bucket(170, LINEAR_BITS) == bucket(180, LINEAR_BITS) == 192
    assert padded_levels([18, 1128, 28]) == [MIN_LEVELS, 1152, 28]  # small first factor: the minimum
    assert padded_levels([100, 6]) == [112, 6]


def test_small_data_sets_share_one_program():
    """Every data set up to MIN_ROWS rows and MIN_LEVELS levels pads to the same sizes:
    one compiled fit (and one Satterthwaite program, whatever the boundary pattern)."""
    from jaxmixed.core._compile import n_compiled_programs

    rng = np.random.default_rng(3)

    def data(subjects, days):
        d = pd.DataFrame({"g": np.repeat(np.arange(subjects), days).astype(str), "x": np.tile(np.arange(days), subjects)})
        d["y"] = 1.0 + 0.5 * d.x + rng.normal(0, 1, len(d)) + np.repeat(rng.normal(0, 1, subjects), days)
        return d

    jm.fit_reml("y ~ x + (x | g)", data(21, 9)).coef_table()
    before = n_compiled_programs()
    for subjects, days in [(40, 10), (7, 12), (60, 15)]:
        fit = jm.fit_reml("y ~ x + (x | g)", data(subjects, days))
        assert fit.nobs == subjects * days and len(fit.random_effects["g"]) == subjects
        fit.coef_table()
    assert n_compiled_programs() == before


def test_similar_data_sets_share_one_compiled_fit():
    """sleepstudy on 170 rows (17 subjects) and on 180 (18): one compiled program, each its own fit."""
    df = jm.load_dataset("sleepstudy")
    _compile.clear_compiled_programs()
    small = jm.fit_reml("Reaction ~ Days + (Days | Subject)", df.iloc[:170])
    assert _compile.n_compiled_programs() == 1
    full = jm.fit_reml("Reaction ~ Days + (Days | Subject)", df)
    assert _compile.n_compiled_programs() == 1
    assert full.objective == pytest.approx(1743.6282719599653, rel=1e-8)  # lme4's REML criterion
    assert small.nobs == 170 and small.objective != full.objective
    assert small.random_effects["Subject"].shape == (17, 2)  # 17 subjects: levels padded alike

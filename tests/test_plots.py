"""Diagnostic plots (jaxmixed.linear._plots): the data drawn are the results' values."""

from __future__ import annotations

import statistics
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

import jaxmixed as jm  # noqa: E402
from jaxmixed.linear import _plots  # noqa: E402


@pytest.fixture(scope="module")
def sleep_fit():
    return jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))


@pytest.fixture(scope="module")
def crossed_fit():
    return jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", jm.load_dataset("Penicillin"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _points(ax) -> np.ndarray:
    """(n, 2) offsets of the first scatter of ``ax``."""
    (scatter,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    return np.asarray(scatter.get_offsets())


def test_caterpillar_plots_the_sorted_modes_and_intervals(sleep_fit):
    fig = sleep_fit.plot_ranef()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    modes = sleep_fit.random_effects["Subject"]
    var = sleep_fit.random_effects_var["Subject"]
    order = np.argsort(modes.iloc[:, 0].to_numpy(), kind="stable")
    for ax, column in zip(axes, modes.columns, strict=True):
        assert ax.get_title() == f"Subject: {column}"
        x = np.asarray(ax.lines[0].get_xdata())
        np.testing.assert_allclose(x, modes[column].to_numpy()[order])
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), np.arange(len(modes)))
        (segments,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        ends = np.asarray([s[:, 0] for s in segments.get_segments()])
        half = 1.959963984540054 * np.sqrt(var[column].to_numpy()[order])
        np.testing.assert_allclose(ends[:, 0], x - half)
        np.testing.assert_allclose(ends[:, 1], x + half)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == [str(v) for v in modes.index[order]]
    first = np.asarray(axes[0].lines[0].get_xdata())
    assert np.all(np.diff(first) >= 0)  # sorted by the first column's modes


def test_caterpillar_has_a_panel_per_factor_and_into_given_axes(crossed_fit):
    fig, given = plt.subplots(1, 2)
    out = crossed_fit.plot_ranef(axes=given)
    assert out is fig
    titles = [ax.get_title() for ax in given]
    assert titles == [f"{name}: {col}" for name, t in crossed_fit.random_effects.items() for col in t.columns]
    for ax, table in zip(given, crossed_fit.random_effects.values(), strict=True):
        assert len(ax.lines[0].get_xdata()) == len(table)
    with pytest.raises(ValueError, match="2 panel"):
        crossed_fit.plot_ranef(axes=given[:1])


def test_residual_plot_draws_fitted_against_residuals(sleep_fit):
    fig, ax = plt.subplots()
    assert sleep_fit.plot_residuals(ax=ax) is fig
    xy = _points(ax)
    np.testing.assert_allclose(xy[:, 0], sleep_fit.fitted)
    np.testing.assert_allclose(xy[:, 1], sleep_fit.residuals)
    zero = ax.lines[0]
    np.testing.assert_array_equal(zero.get_ydata(), [0.0, 0.0])


def test_qq_plots_residuals_and_each_column_of_modes(sleep_fit):
    fig = sleep_fit.plot_qq()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    table = sleep_fit.random_effects["Subject"]
    samples = [sleep_fit.residuals] + [table[c].to_numpy() for c in table.columns]
    assert [ax.get_title() for ax in axes] == ["Residuals"] + [f"Subject: {c}" for c in table.columns]
    for ax, sample in zip(axes, samples, strict=True):
        xy = _points(ax)
        np.testing.assert_allclose(xy[:, 1], np.sort(sample))
        np.testing.assert_allclose(xy[:, 0], _plots.normal_scores(len(sample)))


def test_normal_scores_are_r_ppoints_quantiles():
    # R: qnorm(ppoints(5)); qnorm(ppoints(12))[1]
    np.testing.assert_allclose(
        _plots.normal_scores(5), [-1.17976, -0.49720, 0.0, 0.49720, 1.17976], atol=1e-5
    )
    assert _plots.normal_scores(12)[0] == pytest.approx(statistics.NormalDist().inv_cdf(0.5 / 12))


def test_missing_matplotlib_is_a_clear_error(sleep_fit, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # `import matplotlib.pyplot` fails
    with pytest.raises(ImportError, match=r"jaxmixed\[plot\]"):
        sleep_fit.plot_residuals()
    with pytest.raises(ImportError, match="matplotlib"):
        sleep_fit.plot_ranef()


def test_profile_plot_draws_each_trace_and_its_limits():
    """One panel per parameter: the line is that parameter's (value, ζ) points of
    ``to_frame()``, the dashed verticals the profile interval's finite limits."""
    fit = jm.fit_reml("Yield ~ 1 + (1 | Batch)", jm.load_dataset("Dyestuff"))
    prof = fit.profile()
    fig = prof.plot()
    frame, limits = prof.to_frame(), prof.conf_int()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == list(prof.names)
    for ax, name in zip(axes, prof.names, strict=True):
        rows = frame[frame[".par"] == name]
        line = ax.get_lines()[0]
        np.testing.assert_array_equal(line.get_xdata(), rows[name].to_numpy())
        np.testing.assert_array_equal(line.get_ydata(), rows[".zeta"].to_numpy())
        verticals = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--")
        np.testing.assert_allclose(verticals, sorted(v for v in limits.loc[name] if np.isfinite(v)))


def test_power_curve_plot_draws_the_table():
    from jaxmixed.linear._power import PowerCurve, PowerResult

    def result(p: np.ndarray) -> PowerResult:
        return PowerResult("Days", 5.0, "lrt", 0.05, p, np.ones(len(p), bool), {"Subject": 5}, 50)

    rng = np.random.default_rng(0)
    curve = PowerCurve("Subject", (5, 10), (result(rng.uniform(size=40)), result(rng.uniform(size=40) / 4)))
    fig = curve.plot()
    (ax,) = fig.axes
    line = ax.lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [5, 10])
    np.testing.assert_allclose(line.get_ydata(), curve.table["power"])

"""Diagnostic plots of a fit (matplotlib, imported only when a plot is drawn).

- :func:`plot_ranef`: the caterpillar plot of the conditional modes, lme4's
  ``dotplot(ranef(m, condVar = TRUE))``: one panel per grouping factor and
  random-effects column, the levels on the vertical axis ordered by the
  factor's first column's modes (as lme4 orders them, so that a level sits on
  the same row in each of its factor's panels), each mode with the interval
  ``b̂ ± 1.96·sd`` of its conditional standard deviation.
- :func:`plot_residuals`: residuals against fitted values, with a zero line.
- :func:`plot_qq`: normal QQ plots of the residuals and of each column of
  conditional modes, each with R's ``qqline`` (through the quartiles).
- :func:`plot_power_curve`: a power curve (``PowerCurve``) with its exact
  intervals, as simr's ``plot(powerCurve(...))``.

Each takes ``ax`` (one Axes) or ``axes`` (one Axes per panel, in the order
above) to draw into, else makes a figure, and returns the Figure.

:func:`plot_profile` draws the profile ζ traces of ``profile()`` (lme4's
``xyplot(profile(m))``), one panel per parameter.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import Float

if TYPE_CHECKING:
    from ._power import PowerCurve
    from ._profile import ProfileResults
    from ._results import MixedModelResults

__all__ = [
    "normal_scores",
    "panel_axes",
    "plot_power_curve",
    "plot_profile",
    "plot_qq",
    "plot_ranef",
    "plot_residuals",
    "pyplot",
]

Z_95 = 1.959963984540054  # the normal distribution's 97.5% quantile
_MAX_LABELS = 60  # levels labelled on a caterpillar panel's axis; more: unlabelled


def pyplot() -> Any:
    """``matplotlib.pyplot``, or an ImportError that names the extra to install."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "jaxmixed's plots need matplotlib: install it with `pip install 'jaxmixed[plot]'` "
            "(or `pip install matplotlib`)"
        ) from err
    return plt


def panel_axes(n: int, axes: Any = None, *, ncols: int | None = None, size: float = 3.2) -> tuple[Any, list[Any]]:
    """(figure, n Axes): the given ``axes`` (one Axes or a sequence of n), else a new
    figure of n panels in ``ncols`` columns (default: up to 3), spare panels hidden."""
    plt = pyplot()
    if axes is not None:
        flat = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(flat) != n:
            raise ValueError(f"this plot has {n} panel(s): pass {n} Axes, got {len(flat)}")
        return flat[0].get_figure(), flat
    ncols = min(n, 3) if ncols is None else ncols
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(size * ncols, 0.85 * size * nrows), squeeze=False, layout="constrained"
    )
    flat = list(grid.ravel())
    for spare in flat[n:]:
        spare.set_visible(False)
    return fig, flat[:n]


def _ranef_panels(results: MixedModelResults) -> list[tuple[str, str]]:
    """(factor, column) of every caterpillar panel, factor by factor."""
    return [(name, col) for name, table in results.random_effects.items() for col in table.columns]


def plot_ranef(results: MixedModelResults, *, axes: Any = None) -> Any:
    """The caterpillar plot of the conditional modes (see the module docstring).

    Per panel: a point per level at its mode, a horizontal segment from
    ``b̂ − 1.96·sd`` to ``b̂ + 1.96·sd`` (``random_effects_var``'s square
    roots), and a dotted line at 0. ``axes``: one Axes per (factor, column).
    """
    panels = _ranef_panels(results)
    fig, flat = panel_axes(len(panels), axes)
    for ax, (factor, column) in zip(flat, panels, strict=True):
        modes = results.random_effects[factor]
        order = np.argsort(modes.iloc[:, 0].to_numpy(), kind="stable")
        b = modes[column].to_numpy()[order]
        sd = np.sqrt(results.random_effects_var[factor][column].to_numpy()[order])
        rows = np.arange(len(b))
        ax.hlines(rows, b - Z_95 * sd, b + Z_95 * sd, color="0.45", linewidth=1.0)
        ax.plot(b, rows, "o", color="C0", markersize=3.5)
        ax.axvline(0.0, color="0.3", linestyle=":", linewidth=0.8)
        _level_labels(ax, modes.index[order])
        ax.set_title(f"{factor}: {column}", fontsize=10)
        ax.set_xlabel("conditional mode ± 1.96 sd")
    return fig


def _level_labels(ax: Any, labels: Sequence[Any]) -> None:
    if len(labels) <= _MAX_LABELS:
        ax.set_yticks(np.arange(len(labels)), [str(v) for v in labels], fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_ylim(-0.7, len(labels) - 0.3)


def plot_residuals(results: MixedModelResults, *, ax: Any = None) -> Any:
    """Residuals ``y − Xβ̂ − Zb̂`` against fitted values, with a zero line (lme4's ``plot(m)``)."""
    fig, (axis,) = panel_axes(1, ax, size=4.0)
    axis.scatter(results.fitted, results.residuals, s=12, color="C0", alpha=0.8)
    axis.axhline(0.0, color="0.3", linestyle="--", linewidth=0.8)
    axis.set_xlabel("fitted values")
    axis.set_ylabel("residuals")
    axis.set_title("Residuals against fitted values", fontsize=10)
    return fig


def normal_scores(n: int) -> Float[np.ndarray, " n"]:
    """The normal quantiles of R's ``ppoints(n)``: ``Φ⁻¹((i − a)/(n + 1 − 2a))``, i = 1 … n,
    with a = 3/8 for n ≤ 10, else 1/2 (what ``qqnorm`` plots against)."""
    a = 0.375 if n <= 10 else 0.5
    probs = (np.arange(1, n + 1) - a) / (n + 1 - 2 * a)
    normal = statistics.NormalDist()
    return np.asarray([normal.inv_cdf(float(p)) for p in probs])


def _qq_panel(ax: Any, values: Float[np.ndarray, " n"], title: str) -> None:
    """Sorted ``values`` against the normal scores, and R's ``qqline`` through the quartiles."""
    sample = np.sort(np.asarray(values, float))
    scores = normal_scores(len(sample))
    ax.scatter(scores, sample, s=10, color="C0", alpha=0.8)
    q25, q75 = np.quantile(sample, [0.25, 0.75])
    normal = statistics.NormalDist()
    z25, z75 = normal.inv_cdf(0.25), normal.inv_cdf(0.75)
    slope = (q75 - q25) / (z75 - z25)
    ends = np.asarray([scores[0], scores[-1]])
    ax.plot(ends, q25 + slope * (ends - z25), color="C3", linewidth=1.0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("normal quantiles")
    ax.set_ylabel("sample quantiles")


def plot_qq(results: MixedModelResults, *, axes: Any = None) -> Any:
    """Normal QQ plots: the residuals, then each grouping factor's column of
    conditional modes (``axes``: one Axes per panel, in that order)."""
    panels = _ranef_panels(results)
    fig, flat = panel_axes(1 + len(panels), axes)
    _qq_panel(flat[0], results.residuals, "Residuals")
    for ax, (factor, column) in zip(flat[1:], panels, strict=True):
        _qq_panel(ax, results.random_effects[factor][column].to_numpy(), f"{factor}: {column}")
    return fig


def plot_power_curve(curve: PowerCurve, *, ax: Any = None) -> Any:
    """Power against size with 95% Clopper–Pearson error bars and a dotted line at
    α (the power at effect 0), into ``ax`` (default: a new figure). Returns the Figure."""
    fig, (axis,) = panel_axes(1, ax, size=4.0)
    table = curve.table
    size, power = table["size"].to_numpy(), table["power"].to_numpy()
    below, above = power - table["lower"].to_numpy(), table["upper"].to_numpy() - power
    axis.errorbar(size, power, yerr=np.stack([below, above]), fmt="o-", color="C0", capsize=3)
    axis.axhline(curve.results[0].alpha, color="0.3", linestyle=":", linewidth=0.8)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel(f"size along {curve.along}")
    axis.set_ylabel("power")
    first = curve.results[0]
    axis.set_title(f"{first.term} = {first.effect:g}, {first.test} test", fontsize=10)
    return fig


def plot_profile(profile: ProfileResults, *, level: float = 0.95, axes: Any = None) -> Any:
    """The profile ζ plot (lme4's ``xyplot(profile(m))``): one panel per parameter,
    ζ against the parameter's value, with dotted lines at ζ = ±z and dashed lines at
    the profile interval's limits at ``level`` (default 0.95).

    ``profile``: a ``ProfileResults`` (``MixedModelResults.profile()``); ``axes``:
    one Axes per parameter. Returns the Figure.
    """
    frame = profile.to_frame()
    limits = profile.conf_int(level)
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    fig, panels = panel_axes(len(profile.names), axes)
    for ax, name in zip(panels, profile.names, strict=True):
        rows = frame[frame[".par"] == name]
        ax.plot(np.asarray(rows[name], float), np.asarray(rows[".zeta"], float), "-o", markersize=2.5, color="C0")
        for sign in (-1.0, 1.0):
            ax.axhline(sign * z, color="0.5", linestyle=":", linewidth=0.8)
        for limit in limits.loc[name].to_numpy():
            if np.isfinite(limit):
                ax.axvline(limit, color="C3", linestyle="--", linewidth=0.8)
        ax.set_title(name, fontsize="small")
        ax.set_ylabel("ζ")
    return fig

"""The scaling plot of the peer comparison: fit time against rows, log-log (scaling.png)."""

from __future__ import annotations

from pathlib import Path

# (row key, legend, colour, line style, marker)
SERIES = (
    ("jaxmixed_first_s", "jaxmixed, first call (with compilation)", "C0", "--", "o"),
    ("jaxmixed_steady_s", "jaxmixed, steady state (fit_reml)", "C0", "-", "o"),
    ("jaxmixed_core_s", "jaxmixed, compiled core fit (core.fit)", "C0", ":", "^"),
    ("jaxmixed_onepass_s", "jaxmixed, one pass over the data (core.model_statistics)", "C2", ":", "v"),
    ("statsmodels_s", "statsmodels MixedLM", "C1", "-", "s"),
    ("lme4_s", "lme4 (lmer)", "C3", "-", "D"),
)


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Plots every series present in the scaling rows (``peers.run_scaling``) to path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for key, label, color, ls, marker in SERIES:
        pts = [(r["n"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), color=color, ls=ls, marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows n (groups = n / 100)")
    ax.set_ylabel("fit time (s)")
    ax.set_title("y ~ x1 + x2 + x3 + (x1 | g), REML")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

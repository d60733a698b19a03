"""Simulate data sets whose ML/REML optimum has a random-effect variance at 0.

Writes ``boundary_cases.csv.gz`` (run in ``tests/data``):

    .venv/bin/python tests/data/make_boundary_cases.py

Columns ``design, seed, y, x, g, h``; floats are written with ``repr`` (exact
round trip) and ``h`` is empty except in the crossed design. Each data set is
drawn from ``numpy.random.default_rng(seed)`` alone, so one design's data do
not depend on the others. Designs (the true variance named last is exactly 0):

* ``slope``: 30 groups x 6 rows, ``y = 1 + 0.5 x + b0_g + e``,
  ``b0 ~ N(0, 0.8^2)``; random-slope variance 0.
  Models ``y ~ x + (x | g)`` and ``y ~ x + (x || g)``.
* ``intercept``: 20 groups x 5 rows, ``y = 2 + x + e``; intercept variance 0.
  Model ``y ~ x + (1 | g)``.
* ``crossed``: ``g`` (15 levels) x ``h`` (10 levels), one row per cell,
  ``y = 1 + x + a_g + e``, ``a ~ N(0, 1)``; variance of ``h`` is 0.
  Model ``y ~ x + (1 | g) + (1 | h)``.

Everywhere ``x ~ N(0, 1)`` per row and ``e ~ N(0, 1)``. The fits of lme4 to
these data are in ``boundary_lme4.json`` (``boundary_cases.R``).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

SEEDS = range(100)
MODELS = {
    "slope": ("y ~ x + (x | g)", "y ~ x + (x || g)"),
    "intercept": ("y ~ x + (1 | g)",),
    "crossed": ("y ~ x + (1 | g) + (1 | h)",),
}
OUT = Path(__file__).with_name("boundary_cases.csv.gz")


def simulate(design: str, seed: int) -> dict[str, np.ndarray]:
    """One data set: arrays ``y``, ``x`` (float) and ``g``, ``h`` (str)."""
    rng = np.random.default_rng(seed)
    if design == "slope":
        n_g, per = 30, 6
        gi = np.repeat(np.arange(n_g), per)
        b0 = rng.normal(0.0, 0.8, n_g)
        x = rng.normal(0.0, 1.0, n_g * per)
        e = rng.normal(0.0, 1.0, n_g * per)
        y = 1.0 + 0.5 * x + b0[gi] + e
        h = np.full(gi.shape, "")
    elif design == "intercept":
        n_g, per = 20, 5
        gi = np.repeat(np.arange(n_g), per)
        x = rng.normal(0.0, 1.0, n_g * per)
        e = rng.normal(0.0, 1.0, n_g * per)
        y = 2.0 + x + e
        h = np.full(gi.shape, "")
    elif design == "crossed":
        n_g, n_h = 15, 10
        gi = np.repeat(np.arange(n_g), n_h)
        hi = np.tile(np.arange(n_h), n_g)
        a = rng.normal(0.0, 1.0, n_g)
        x = rng.normal(0.0, 1.0, n_g * n_h)
        e = rng.normal(0.0, 1.0, n_g * n_h)
        y = 1.0 + x + a[gi] + e
        h = np.array([f"h{i:02d}" for i in hi])
    else:
        raise ValueError(f"unknown design {design!r}")
    g = np.array([f"g{i:02d}" for i in gi])
    return {"y": y, "x": x, "g": g, "h": h}


def main() -> None:
    buf = io.StringIO()
    buf.write("design,seed,y,x,g,h\n")
    for design in MODELS:
        for seed in SEEDS:
            d = simulate(design, seed)
            for y, x, g, h in zip(d["y"], d["x"], d["g"], d["h"], strict=True):
                buf.write(f"{design},{seed},{float(y)!r},{float(x)!r},{g},{h}\n")
    # mtime=0 and no file name in the header: byte-identical output on rerun.
    with (
        open(OUT, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        gz.write(buf.getvalue().encode("ascii"))


if __name__ == "__main__":
    main()

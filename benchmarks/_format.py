"""Number formats shared by the benchmark reports (run_benchmarks.py, many_benchmark.py)."""

from __future__ import annotations

import math

__all__ = ["fmt_s"]


def fmt_s(x) -> str:
    """Seconds with three significant digits or so; "–" for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2g}"

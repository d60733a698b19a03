"""Confidence intervals of a fitted model: Wald (fixed effects), profile likelihood or parametric bootstrap."""

from __future__ import annotations

from statistics import NormalDist
from typing import TYPE_CHECKING

import jax
import numpy as np
import pandas as pd

from ._profile import profile_intervals

if TYPE_CHECKING:  # the results import this module
    from ._results import MixedModelResults

__all__ = ["conf_int", "wald_intervals"]

# The standard normal 97.5% quantile, correctly rounded: NormalDist().inv_cdf(0.975)
# is one unit in the last place below it, and the default intervals keep it.
_Z975 = 1.959963984540054


def conf_int(
    results: MixedModelResults,
    level: float = 0.95,
    method: str = "wald",
    *,
    n_boot: int = 1000,
    key: int | np.integer | jax.Array = 0,
    batch_size: int | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """``MixedModelResults.conf_int``: a (parameters × 2) table of lower and
    upper bounds, columns named by their percentages (``2.5%``, ``97.5%``).

    ``"wald"``: the fixed effects; ``"profile"``: every parameter, where the
    profile's ζ crosses ∓z (``results.profile()``); ``"boot"``: every
    parameter, from ``results.bootstrap(n_boot, key, ...)``.
    """
    if method == "profile":
        return profile_intervals(results, level)
    if method == "boot":
        boot = results.bootstrap(n_boot, key, batch_size=batch_size, verbose=verbose)
        return boot.conf_int(level)
    if method != "wald":
        raise ValueError(f"method must be 'wald', 'profile' or 'boot', got {method!r}")
    return wald_intervals(results.fixed_effects, results.fixed_effects_se, level)


def wald_intervals(estimate: pd.Series, se: pd.Series, level: float) -> pd.DataFrame:
    """``estimate ± z·se`` with z the normal quantile of ``(1 + level) / 2``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = _Z975 if level == 0.95 else NormalDist().inv_cdf(0.5 + level / 2)
    pct = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    return pd.DataFrame({f"{pct[0]:g}%": estimate - z * se, f"{pct[1]:g}%": estimate + z * se})

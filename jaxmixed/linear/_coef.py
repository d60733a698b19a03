"""Each level's coefficients: the fixed effects plus its conditional modes (lme4's ``coef``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["coefficients"]


def coefficients(fixef: pd.Series, ranef: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Per grouping factor, a table (levels × coefficients): every fixed effect, plus the
    level's mode in the columns that have a random effect.

    As lme4's ``coef``: a random-effect column without a fixed effect (``(Days |
    Subject)`` with no ``Days`` in the fixed part) is 0 plus the modes, and such columns
    come first.
    """
    seen = dict.fromkeys(c for table in ranef.values() for c in table.columns)
    missing = [c for c in seen if c not in fixef.index]
    base = pd.concat([pd.Series(0.0, index=missing, dtype=float), fixef.astype(float)])
    out = {}
    for name, table in ranef.items():
        values = np.tile(base.to_numpy(), (len(table), 1))
        cols = base.index.get_indexer(table.columns)
        values[:, cols] += table.to_numpy(float)
        out[name] = pd.DataFrame(values, index=table.index.copy(), columns=base.index.copy())
    return out

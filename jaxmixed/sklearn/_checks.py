"""Input checks and helpers shared by the estimators.

scikit-learn's validation of X and y, cluster labels, random-slope columns,
the seed from ``random_state``, and the data frame and lme4 formula that the
mixed fits receive (columns ``x0 … x{d-1}``, ``y``, ``group``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import pandas as pd
from jaxtyping import Float

from ._scikit import BaseEstimator, check_random_state, clone, validate_data


def _seed(random_state) -> int:
    """An int seed from scikit-learn's ``random_state`` (None, an int or a RandomState)."""
    if isinstance(random_state, int | np.integer) and 0 <= int(random_state) < 2**32:
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


class _Regressor(Protocol):
    """What the estimators need of a fixed part: scikit-learn's ``fit`` and ``predict``."""

    def fit(self, X: Any, y: Any) -> Any: ...

    def predict(self, X: Any) -> Any: ...


_Estimator = TypeVar("_Estimator")


def _clone(estimator: _Estimator) -> _Estimator:
    """``sklearn.base.clone`` of an estimator: unfitted, with the same parameters and type."""
    # clone also copies lists, dicts and sets of estimators: its inferred return type is their union.
    return cast(_Estimator, clone(estimator))


def _valid_xy(
    est: BaseEstimator, X, y, **kwargs: Any
) -> tuple[Float[np.ndarray, "n p"], Float[np.ndarray, " n"]]:
    """``validate_data`` of a fit (sets ``n_features_in_``): X (n, p) and y (n,) in float64."""
    X, y = validate_data(est, X, y, dtype=np.float64, y_numeric=True, **kwargs)
    assert isinstance(X, np.ndarray), "validate_data gives X as a dense array (sparse not accepted)"
    return X, np.asarray(y, dtype=np.float64)


def _valid_x(est: BaseEstimator, X) -> Float[np.ndarray, "n p"]:
    """``validate_data`` of a prediction: X (n, p) in float64 with the fitted number of columns."""
    X = validate_data(est, X, dtype=np.float64, reset=False)
    assert isinstance(X, np.ndarray), "validate_data gives X as a dense array (sparse not accepted)"
    return X


def _check_groups(groups, n: int) -> np.ndarray:
    """Cluster labels (n,) as a numpy array (any hashable values)."""
    g = groups.to_numpy() if isinstance(groups, pd.Series | pd.Index) else np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"groups must be 1-dimensional with one label per row ({n}); got shape {g.shape}")
    return g


def _slopes(random_slopes, d: int) -> tuple[int, ...]:
    """Validated indices of the columns of X with random slopes."""
    if random_slopes is None:
        return ()
    slopes = tuple(int(k) for k in np.atleast_1d(random_slopes))
    if any(k < 0 or k >= d for k in slopes) or len(set(slopes)) != len(slopes):
        raise ValueError(
            f"random_slopes must be distinct column indices of X in [0, {d}), got {random_slopes!r}"
        )
    return slopes


def _formula(d: int, slopes: Sequence[int]) -> str:
    """lme4's formula of the frame of :func:`_frame`: ``y ~ x0 + … + (1 + x2 | group)``."""
    random = " + ".join(["1"] + [f"x{k}" for k in slopes])
    return f"y ~ {' + '.join(f'x{k}' for k in range(d))} + ({random} | group)"


def _frame(
    X: Float[np.ndarray, "n p"], y: Float[np.ndarray, " n"] | None = None, groups: np.ndarray | None = None
) -> pd.DataFrame:
    """Columns ``x0 … x{d-1}``, then ``y`` and ``group`` when given."""
    frame = pd.DataFrame(X, columns=[f"x{k}" for k in range(X.shape[1])])
    if y is not None:
        frame["y"] = y
    if groups is not None:
        frame["group"] = groups
    return frame

"""The cluster labels as a column of X (``group_col``): the features and the labels of one X.

scikit-learn's tools pass X and y to ``fit``, ``predict`` and ``score`` and,
without metadata routing, nothing else. With ``group_col`` the labels travel
inside X, so ``cross_val_score``, ``GridSearchCV`` and ``Pipeline`` give them
to the estimator (and slice them with the rows) unchanged. ``n_features_in_``
and ``feature_names_in_`` describe the whole X, group column included, as
scikit-learn's checks expect; the fixed part sees the other columns.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
from jaxtyping import Float

from ._scikit import BaseEstimator, check_array, check_X_y, validate_data

# dtype passed as a keyword dict: check_array and check_X_y have no annotations, and type
# checkers infer str from their default dtype="numeric".
_FLOAT64: dict[str, Any] = {"dtype": np.float64}
_AS_IS: dict[str, Any] = {"dtype": None}


def _group_position(group_col, X, n_columns: int) -> int:
    """The position (0 … n_columns−1) of ``group_col`` among the columns of X.

    An int is a position (negative counts from the end), for arrays and
    DataFrames alike, as ``ColumnTransformer`` reads ints; anything else is a
    column name of a DataFrame.
    """
    if isinstance(group_col, int | np.integer) and not isinstance(group_col, bool):
        if not -n_columns <= group_col < n_columns:
            raise ValueError(f"group_col={group_col} is not a column of X, which has {n_columns} columns")
        return int(group_col) % n_columns
    if not isinstance(X, pd.DataFrame):
        raise ValueError(
            f"group_col={group_col!r} is a column name, so X must be a pandas DataFrame; got "
            f"{type(X).__name__} (for an array give the column's index, an int)"
        )
    positions = [k for k, name in enumerate(X.columns) if name == group_col]
    if len(positions) != 1:
        raise ValueError(
            f"group_col={group_col!r} must name one column of X; its columns are {list(X.columns)}"
        )
    return positions[0]


def _column_labels(labels: np.ndarray, group_col) -> np.ndarray:
    """The labels (n,) of the group column, refused when one is missing (NaN, None) or infinite."""
    missing = pd.isna(labels)
    if labels.dtype.kind in "fc":  # a numeric column: inf is as meaningless a label as NaN
        missing = missing | np.isinf(labels)
    if missing.any():
        raise ValueError(
            f"the group column group_col={group_col!r} of X contains NaN, None or inf in "
            f"{int(missing.sum())} row(s): every row needs a cluster label"
        )
    return labels


def _split_group_col(est: BaseEstimator, X, group_col, *, reset: bool) -> tuple[Any, np.ndarray]:
    """X without its column ``group_col`` (the features, not yet validated) and that column's labels (n,).

    Sets (``reset=True``, in fit) or checks ``n_features_in_`` and
    ``feature_names_in_`` on the whole X.
    """
    # dtype=None keeps an object array's labels (strings) as they are; refuses sparse and 1-d X
    # (before the count of columns below, which would only say "no features" of a 1-d X)
    table = (
        X if isinstance(X, pd.DataFrame) else check_array(X, ensure_all_finite=False, estimator=est, **_AS_IS)
    )
    # the counts and names of the whole X (cast: validate_data's X has no annotation, and type
    # checkers infer str from its default)
    validate_data(est, cast(Any, X), skip_check_array=True, reset=reset)
    n_columns = table.shape[1]
    if n_columns < 2:  # scikit-learn's checks look for "1 feature(s)" in this message
        raise ValueError(
            f"X has {n_columns} feature(s), the group column group_col={group_col!r} alone: "
            "the fixed part needs at least one more column"
        )
    j = _group_position(group_col, table, n_columns)
    others = [k for k in range(n_columns) if k != j]
    if isinstance(table, pd.DataFrame):
        return table.iloc[:, others], _column_labels(table.iloc[:, j].to_numpy(), group_col)
    return table[:, others], _column_labels(np.asarray(table[:, j]), group_col)


def _features_of_fit(
    est: BaseEstimator, X, y, group_col
) -> tuple[Float[np.ndarray, "n p"], Float[np.ndarray, " n"], np.ndarray]:
    """The features (n, p) and y (n,) in float64, and the labels (n,), of ``fit(X, y)`` with ``group_col``."""
    features, labels = _split_group_col(est, X, group_col, reset=True)
    features, y = check_X_y(features, y, y_numeric=True, ensure_min_samples=2, estimator=est, **_FLOAT64)
    return np.asarray(features), np.asarray(y, dtype=np.float64), labels


def _features_of_predict(est: BaseEstimator, X, group_col) -> tuple[Float[np.ndarray, "n p"], np.ndarray]:
    """The features (n, p) in float64 and the labels (n,) of ``predict(X)`` with ``group_col``."""
    features, labels = _split_group_col(est, X, group_col, reset=False)
    return np.asarray(check_array(features, estimator=est, **_FLOAT64)), labels

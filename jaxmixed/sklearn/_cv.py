"""Grouped cross-validation of a mixed model against its fixed part (:func:`cross_validate_mixed`).

The cross-validation of the mixedML paper and flexcv: per fold, the mixed fit
scored within clusters and out of them, against the plain estimator on X and
on X plus one-hot cluster columns.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from ._checks import _check_groups, _clone
from ._mixed import _UNSEEN, _MixedRegressor
from ._scikit import GroupKFold, KFold, OneHotEncoder

_COLUMNS = ["fold", "split", "mse_within", "mse_out", "mse_plain", "mse_plain_onehot", "seconds"]


def _splits(
    cv,
    n_splits: int,
    random_state,
    X: Float[np.ndarray, "n p"],
    y: Float[np.ndarray, " n"],
    groups: np.ndarray,
) -> Iterable[tuple[Int[np.ndarray, " n_train"], Int[np.ndarray, " n_test"]]]:
    """The (train, test) index pairs of ``cv`` (see :func:`cross_validate_mixed`)."""
    if isinstance(cv, str):
        if cv == "groups":
            return GroupKFold(n_splits=n_splits).split(X, y, groups)
        if cv == "rows":  # KFold warns when given groups, which it ignores
            return KFold(n_splits=n_splits, shuffle=True, random_state=random_state).split(X, y)
        raise ValueError(f"cv must be 'groups', 'rows' or a scikit-learn splitter, got {cv!r}")
    if not callable(getattr(cv, "split", None)):
        raise TypeError(f"cv must be 'groups', 'rows' or a splitter with split(X, y, groups); got {cv!r}")
    return cv.split(X, y, groups)


def _fold_rows(
    mixed: _MixedRegressor,
    X: Float[np.ndarray, "n p"],
    y: Float[np.ndarray, " n"],
    groups: np.ndarray,
    train: Int[np.ndarray, " n_train"],
    test: Int[np.ndarray, " n_test"],
    fold: int,
) -> tuple[list[dict[str, Any]], _MixedRegressor]:
    """The two rows (train, test) of one fold of :func:`cross_validate_mixed`, and the fitted model."""
    model = _clone(mixed)
    start = time.perf_counter()
    model.fit(X[train], y[train], groups=groups[train])
    seconds = time.perf_counter() - start
    plain = _clone(mixed.plain_estimator()).fit(X[train], y[train])
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(groups[train].reshape(-1, 1))

    def with_onehot(idx: Int[np.ndarray, " m"]) -> Float[np.ndarray, "m p_onehot"]:
        # sparse_output=False: transform gives a dense array (its stub allows sparse ones)
        onehot = cast(np.ndarray, encoder.transform(groups[idx].reshape(-1, 1)))
        return np.hstack([X[idx], onehot])

    onehot = _clone(mixed.plain_estimator()).fit(with_onehot(train), y[train])
    rows = []
    for split, idx in (("train", train), ("test", test)):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f".*{_UNSEEN}")
            within = model.predict(X[idx], groups=groups[idx])
        preds = (within, model.predict(X[idx]), plain.predict(X[idx]), onehot.predict(with_onehot(idx)))
        mses = [float(np.mean((y[idx] - np.asarray(p, dtype=np.float64).reshape(-1)) ** 2)) for p in preds]
        rows.append(dict(zip(_COLUMNS, [fold, split, *mses, seconds], strict=True)))
    return rows, model


def cross_validate_mixed(
    mixed, X, y, groups, *, cv="groups", n_splits=10, random_state=0, return_estimators=False
) -> pd.DataFrame | tuple[pd.DataFrame, list]:
    """Grouped cross-validation of a mixed model against its fixed part (mixedML's, flexcv's).

    For each fold, ``clone(mixed)`` is fitted on the training rows with their
    clusters, and four predictions are scored on the training and on the
    test rows:

    - ``mse_within``: with the random effects of the rows' clusters (a
      cluster unseen in training gets the population prediction; the warning
      about it is silenced here);
    - ``mse_out``: the population prediction (random effects ignored);
    - ``mse_plain``: ``mixed.plain_estimator()`` fitted on X;
    - ``mse_plain_onehot``: the plain estimator fitted on X plus one-hot
      columns of the training clusters (an unseen cluster: all zeros).

    Parameters
    ----------
    mixed : MixedLMRegressor, MixedNNRegressor or MixedEMRegressor
        Unfitted, with ``group_col=None``; it is cloned for each fold.
    X : array-like or DataFrame of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    groups : array-like of shape (n_samples,)
        Cluster labels.
    cv : "groups", "rows" or a splitter, default="groups"
        ``"groups"``: ``GroupKFold(n_splits)``, test clusters unseen in
        training; ``"rows"``: ``KFold(n_splits, shuffle=True,
        random_state=random_state)``, rows at random, clusters seen; or any
        scikit-learn splitter (``split(X, y, groups)`` is called).
    n_splits : int, default=10
    random_state : int, default=0
        Seeds ``cv="rows"``.
    return_estimators : bool, default=False
        Also return the fitted mixed estimator of every fold (their
        ``results_`` / ``model_`` hold variance components, σ, effects).

    Returns
    -------
    DataFrame
        2·n_folds rows, columns ``fold``, ``split`` ("train"/"test"),
        ``mse_within``, ``mse_out``, ``mse_plain``, ``mse_plain_onehot``,
        ``seconds`` (wall time of the mixed fit of the fold); with
        ``return_estimators=True``, ``(frame, estimators)``.
    """
    if getattr(mixed, "group_col", None) is not None:  # the labels would come twice, once as a feature
        raise ValueError(
            "cross_validate_mixed takes the cluster labels as its argument groups and X without them: "
            f"give it mixed.set_params(group_col=None) and X without the column {mixed.group_col!r}"
        )
    X = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float64)
    y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y, dtype=np.float64).reshape(-1)
    groups = _check_groups(groups, len(y))
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(
            f"X must be (n_samples, n_features) with n_samples = len(y) = {len(y)}; got {X.shape}"
        )
    rows, fitted = [], []
    for fold, (train, test) in enumerate(_splits(cv, n_splits, random_state, X, y, groups)):
        fold_rows, model = _fold_rows(mixed, X, y, groups, train, test, fold)
        rows += fold_rows
        fitted.append(model)
    frame = pd.DataFrame.from_records(rows, columns=_COLUMNS)
    return (frame, fitted) if return_estimators else frame

"""The shared base of the mixed-model estimators: ``fit``, ``predict`` and ``score`` with ``groups``.

:class:`_MixedRegressor` validates the data, takes the cluster labels from
``groups=`` or from the column ``group_col`` of X, routes ``groups`` as
metadata, refuses a fit without labels unless ``allow_no_groups=True`` (then
it fits the fixed part alone, with a :class:`NoGroupsWarning`),
and leaves the mixed fit and its predictions to the subclasses
(:class:`MixedLMRegressor`, :class:`MixedNNRegressor`, :class:`MixedEMRegressor`).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..core._callers import user_stacklevel
from ._checks import _check_groups, _clone, _formula, _frame, _Regressor, _slopes, _valid_x, _valid_xy
from ._groupcol import _features_of_fit, _features_of_predict
from ._scikit import BaseEstimator, RegressorMixin, check_is_fitted, r2_score

_UNSEEN = "not seen in fitting"  # the library's warning for unseen levels says this


class NoGroupsWarning(UserWarning):
    """A mixed-model estimator with ``allow_no_groups=True`` was fitted without cluster labels.

    The fixed part alone was fitted (``fixed_only_``).
    """


def _no_groups_message(name: str) -> str:
    """The error of a fit without cluster labels: the three ways to give them, and the opt-out."""
    return (
        f"{name}.fit got no cluster labels, so it cannot fit random effects. Give them one of three "
        "ways: fit(X, y, groups=g); group_col= (a column of X: its index, or its name in a DataFrame), "
        "which works inside cross_val_score, GridSearchCV and Pipeline as they are; or metadata "
        "routing (sklearn.set_config(enable_metadata_routing=True), then params={'groups': g}). "
        "To fit the fixed part alone, without random effects, opt in with allow_no_groups=True."
    )


class _MixedRegressor(RegressorMixin, BaseEstimator):
    """Shared ``fit`` / ``predict`` / ``score`` of the mixed-model estimators.

    Subclasses give ``plain_estimator()``, ``_fit_mixed(frame)`` (the mixed
    fit of the frame of :func:`_frame` with the formula ``formula_``),
    ``_fit_fixed_only()`` (attributes after a fit without groups) and
    ``_predict_mixed(frame, include_random)``.
    """

    # Metadata routing: fit asks for the cluster labels; predict and score do
    # not, unless set_predict_request / set_score_request(groups=True).
    __metadata_request__fit = {"groups": True}
    __metadata_request__predict = {"groups": False}
    __metadata_request__score = {"groups": False}

    # Parameters of every subclass; fitted attributes set by fit (declared for type checkers).
    random_slopes: Sequence[int] | None
    group_col: Hashable | None
    allow_no_groups: bool
    n_features_in_: int
    formula_: str | None
    fixed_only_: _Regressor | None

    def fit(self, X, y, groups=None):
        """Fits the mixed model with one random intercept (and slopes) per cluster.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features_in_)
            Features of the fixed part (an intercept is added), and the
            cluster labels in column ``group_col`` when that is set.
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), default=None
            Cluster labels (any hashable values); only when ``group_col`` is
            None. With neither, fit raises a ValueError unless
            ``allow_no_groups=True``: then the fixed part alone is fitted
            (``fixed_only_``), with a :class:`NoGroupsWarning`.

        Returns
        -------
        self
        """
        if groups is None and self.group_col is None and not self.allow_no_groups:
            raise ValueError(_no_groups_message(type(self).__name__))  # before fit sets anything
        X, y, groups = self._fit_data(X, y, groups)
        slopes = _slopes(self.random_slopes, X.shape[1])
        if groups is None:
            warnings.warn(
                f"{type(self).__name__}.fit got no groups (allow_no_groups=True): fitting the fixed "
                "part alone, the limit of a single cluster (random-effects variance 0)",
                NoGroupsWarning,
                stacklevel=user_stacklevel(),
            )
            self.formula_ = None
            self.fixed_only_ = _clone(self.plain_estimator()).fit(X, y)
            self._fit_fixed_only()
            return self
        self.formula_ = _formula(X.shape[1], slopes)
        self.fixed_only_ = None
        self._fit_mixed(_frame(X, y, groups))
        return self

    def _fit_data(self, X, y, groups) -> tuple[Float[np.ndarray, "n p"], Float[np.ndarray, " n"], Any]:
        """The features (n, p), y (n,) and labels (n,) or None of a fit; sets ``n_features_in_``."""
        if self.group_col is None:
            X, y = _valid_xy(self, X, y, ensure_min_samples=2)
            return X, y, None if groups is None else _check_groups(groups, len(y))
        self._check_one_way(groups)
        return _features_of_fit(self, X, y, self.group_col)

    def _check_one_way(self, groups) -> None:
        """Refuses ``groups=`` given as well as ``group_col``: two sources of the labels."""
        if groups is not None:
            raise ValueError(
                f"{type(self).__name__} got groups= and has group_col={self.group_col!r}: give the "
                "cluster labels one way (group_col takes them from that column of X; or set "
                "group_col=None and pass groups=)"
            )

    def predict(self, X, groups=None):
        """Predictions of the fixed part, plus each row's cluster effects when the labels are known.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features_in_)
            As in fit: with ``group_col``, the labels are that column of X.
        groups : array-like of shape (n_samples,), default=None
            Only when ``group_col`` is None. None (and no ``group_col``): the
            population prediction (random effects 0). Labels: the
            within-cluster prediction; a cluster not seen in fitting gets the
            population prediction, and a warning says how many rows that was.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if self.group_col is None:
            X = _valid_x(self, X)
            if groups is not None:
                groups = _check_groups(groups, X.shape[0])
        else:
            self._check_one_way(groups)
            X, groups = _features_of_predict(self, X, self.group_col)
        if self.fixed_only_ is not None:
            if groups is not None:
                warnings.warn(
                    f"{len(groups)} row(s) have levels of 'group' {_UNSEEN} (the model was fitted "
                    "without groups): they get the population prediction",
                    stacklevel=user_stacklevel(),
                )
            return np.asarray(self.fixed_only_.predict(X), dtype=np.float64).reshape(-1)
        frame = _frame(X, groups=groups)
        return np.asarray(self._predict_mixed(frame, groups is not None), dtype=np.float64)

    def score(self, X, y, groups=None, sample_weight=None):
        """R² of ``predict(X, groups)`` (population prediction without groups).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), default=None
            Only when ``group_col`` is None, as in predict.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows in R².

        Returns
        -------
        float
        """
        return float(r2_score(y, self.predict(X, groups=groups), sample_weight=sample_weight))

    def get_metadata_routing(self):
        """scikit-learn's metadata request: ``groups`` for fit (for predict and score on request).

        With ``group_col`` set, fit requests no ``groups``: the labels come
        from X, and routed ones as well would be an error. A splitter such as
        ``GroupKFold`` still receives them under routing.
        """
        requests = super().get_metadata_routing()
        if self.group_col is not None:
            requests.fit.add_request(param="groups", alias=False)
        return requests

    def plain_estimator(self) -> _Regressor:
        """An unfitted regressor of the same fixed part without random effects."""
        raise NotImplementedError

    def _fit_mixed(self, frame: pd.DataFrame) -> None:
        """The mixed fit of ``frame`` (:func:`_frame`) with the formula ``formula_``."""
        raise NotImplementedError

    def _fit_fixed_only(self) -> None:
        """The attributes after a fit without groups, ``fixed_only_`` fitted."""
        raise NotImplementedError

    def _predict_mixed(self, frame: pd.DataFrame, include_random: bool) -> np.ndarray:
        """Predictions (n,) of the mixed fit for the rows of ``frame``."""
        raise NotImplementedError

    def _n_fixed(self) -> int:
        """Columns of the fixed part: those of the fitted X but ``group_col``."""
        # getattr: estimators pickled before group_col existed lack it
        return self.n_features_in_ - (getattr(self, "group_col", None) is not None)

    def _fitted_formula(self) -> str:
        """``formula_``, which a fit with groups sets before ``_fit_mixed``."""
        assert self.formula_ is not None, "fit sets formula_ before a mixed fit"
        return self.formula_

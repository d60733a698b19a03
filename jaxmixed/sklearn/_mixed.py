"""The shared base of the mixed-model estimators: ``fit``, ``predict`` and ``score`` with ``groups``.

:class:`_MixedRegressor` validates the data, routes ``groups`` as metadata,
fits the fixed part alone when there are none (:class:`NoGroupsWarning`),
and leaves the mixed fit and its predictions to the subclasses
(:class:`MixedLMRegressor`, :class:`MixedNNRegressor`, :class:`MixedEMRegressor`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core._callers import user_stacklevel
from ._checks import _check_groups, _clone, _formula, _frame, _Regressor, _slopes, _valid_x, _valid_xy
from ._scikit import BaseEstimator, RegressorMixin, check_is_fitted, r2_score

_UNSEEN = "not seen in fitting"  # the library's warning for unseen levels says this


class NoGroupsWarning(UserWarning):
    """A mixed-model estimator was fitted without ``groups``: the fixed part alone was fitted."""


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

    # A parameter of every subclass; set by fit (declared for type checkers).
    random_slopes: Sequence[int] | None
    n_features_in_: int
    formula_: str | None
    fixed_only_: _Regressor | None

    def fit(self, X, y, groups=None):
        """Fits the mixed model with one random intercept (and slopes) per cluster.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features of the fixed part (an intercept is added).
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), default=None
            Cluster labels (any hashable values). None: the fixed part alone
            is fitted (``fixed_only_``), with a :class:`NoGroupsWarning`; see
            the module's documentation.

        Returns
        -------
        self
        """
        X, y = _valid_xy(self, X, y, ensure_min_samples=2)
        slopes = _slopes(self.random_slopes, X.shape[1])
        if groups is None:
            warnings.warn(
                f"{type(self).__name__}.fit got no groups: fitting the fixed part alone, the limit of a "
                "single cluster (random-effects variance 0). Pass fit(X, y, groups=...); inside "
                "scikit-learn tools enable metadata routing and pass params={'groups': ...}",
                NoGroupsWarning,
                stacklevel=user_stacklevel(),
            )
            self.formula_ = None
            self.fixed_only_ = _clone(self.plain_estimator()).fit(X, y)
            self._fit_fixed_only()
            return self
        groups = _check_groups(groups, len(y))
        self.formula_ = _formula(X.shape[1], slopes)
        self.fixed_only_ = None
        self._fit_mixed(_frame(X, y, groups))
        return self

    def predict(self, X, groups=None):
        """Predictions of the fixed part, plus each row's cluster effects when ``groups`` is given.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
        groups : array-like of shape (n_samples,), default=None
            None: the population prediction (random effects 0). Labels: the
            within-cluster prediction; a cluster not seen in fitting gets the
            population prediction, and a warning says how many rows that was.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = _valid_x(self, X)
        if groups is not None:
            groups = _check_groups(groups, X.shape[0])
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
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows in R².

        Returns
        -------
        float
        """
        return float(r2_score(y, self.predict(X, groups=groups), sample_weight=sample_weight))

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

    def _fitted_formula(self) -> str:
        """``formula_``, which a fit with groups sets before ``_fit_mixed``."""
        assert self.formula_ is not None, "fit sets formula_ before a mixed fit"
        return self.formula_

""":class:`MixedEMRegressor`: mixedML's EM around any scikit-learn regressor (:func:`jaxmixed.fit_mixed_em`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..networks._api import fit_mixed_em
from ..networks._results import MixedNNResults
from ._checks import _clone, _Regressor
from ._mixed import _MixedRegressor


class MixedEMRegressor(_MixedRegressor):
    """mixedML's EM around any scikit-learn regressor (:func:`jaxmixed.fit_mixed_em`).

    ``y = f(x) + β₀ + b₀[g] + Σ_k b_k[g]·X[:, k] + ε`` with ``f`` a clone of
    ``estimator``, refitted each round to ``y − Zb̂``; the variance components
    are fitted exactly each round. See the module's documentation for the
    three ways to pass the cluster labels.

    Parameters
    ----------
    estimator : regressor
        Any object with ``fit(X, y)`` and ``predict(X)`` (cloned; raw
        features: put scaling in a ``Pipeline``).
    reml : bool, default=True
    max_rounds : int, default=100
        Limit on EM rounds.
    tol : float, default=1e-4
        Relative change of the generalised log-likelihood that stops EM.
    random_slopes : sequence of int or None, default=None
        Indices of the feature columns with a random slope (without ``group_col``).
    verbose : bool, default=False
        A progress bar for long fits.
    group_col : int, str or None, default=None
        The column of X with the cluster labels, as :class:`MixedLMRegressor`'s.
    allow_no_groups : bool, default=False
        As :class:`MixedLMRegressor`'s: a fit without labels is an error unless True.

    Attributes
    ----------
    model_ : MixedNNResults or None
        The fit (``varcorr``, ``sigma``, ``intercept`` …); None after a fit
        without groups.
    estimator_ : regressor
        The fitted clone of ``estimator`` (``f``; ``model_.intercept`` is added to it).
    formula_ : str or None
    fixed_only_ : regressor or None
        The fit without groups (None after a mixed fit).
    n_features_in_ : int
        Columns of X, ``group_col`` included.
    feature_names_in_ : ndarray of shape (n_features_in_,)
    """

    _required_parameters = ["estimator"]

    model_: MixedNNResults | None
    estimator_: _Regressor | None

    def __init__(
        self,
        estimator,
        reml=True,
        max_rounds=100,
        tol=1e-4,
        random_slopes=None,
        verbose=False,
        *,
        group_col=None,
        allow_no_groups=False,
    ):
        self.estimator = estimator
        self.reml = reml
        self.max_rounds = max_rounds
        self.tol = tol
        self.random_slopes = random_slopes
        self.verbose = verbose
        self.group_col = group_col
        self.allow_no_groups = allow_no_groups

    def plain_estimator(self):
        """``clone(estimator)``: the fixed part without random effects."""
        return _clone(self.estimator)

    def _fit_mixed(self, frame: pd.DataFrame) -> None:
        self.model_ = fit_mixed_em(
            _clone(self.estimator), self._fitted_formula(), frame,
            reml=self.reml, max_rounds=self.max_rounds, tol=self.tol, verbose=self.verbose,
        )  # fmt: skip
        self.estimator_ = self.model_.model

    def _fit_fixed_only(self) -> None:
        self.model_ = None
        self.estimator_ = self.fixed_only_

    def _predict_mixed(self, frame: pd.DataFrame, include_random: bool) -> np.ndarray:
        assert self.model_ is not None, "a fit with groups holds its results"
        return self.model_.predict(frame, include_random=include_random)

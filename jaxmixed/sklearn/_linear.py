""":class:`MixedLMRegressor`: lme4's linear mixed model (:func:`jaxmixed.fit_reml`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..linear._api import fit_reml
from ..linear._results import MixedModelResults
from ._mixed import _MixedRegressor
from ._scikit import LinearRegression


class MixedLMRegressor(_MixedRegressor):
    """lme4's linear mixed model as a scikit-learn regressor (:func:`jaxmixed.fit_reml`).

    ``y = β₀ + Xβ + b₀[g] + Σ_k b_k[g]·X[:, k] + ε``: a random intercept per
    cluster ``g`` and random slopes on the columns ``random_slopes`` of X,
    correlated with it (lme4's ``y ~ x0 + … + (1 + x2 | group)``). See the
    module's documentation for the three ways to pass the cluster labels.

    Parameters
    ----------
    reml : bool, default=True
        REML (True) or maximum likelihood variance components.
    random_slopes : sequence of int or None, default=None
        Indices of the feature columns with a random slope (counted among the
        columns of X without ``group_col``).
    group_col : int, str or None, default=None
        The column of X that holds the cluster labels: an int is its
        position (negative counts from the end), a str its name in a
        DataFrame X. The other columns are the features. None: the labels
        come from ``groups=``.
    allow_no_groups : bool, default=False
        A fit without labels (no ``groups=``, no ``group_col``) is an error
        unless True; then it fits the fixed part alone (``fixed_only_``),
        with a :class:`NoGroupsWarning`.

    Attributes
    ----------
    results_ : MixedModelResults or None
        The fit (``varcorr``, ``sigma``, ``random_effects`` …); None after a
        fit without groups.
    formula_ : str or None
        The formula fitted, on the columns ``x0 … x{d-1}`` (the features),
        ``y``, ``group``.
    coef_ : ndarray of shape (d,)
        Fixed slopes of the d features (0 for a column dropped as aliased).
    intercept_ : float
        Fixed intercept.
    fixed_only_ : LinearRegression or None
        The fit without groups (None after a mixed fit).
    n_features_in_ : int
        Columns of X, ``group_col`` included.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When X was a DataFrame with string column names (``group_col`` included).
    """

    results_: MixedModelResults | None
    coef_: Float[np.ndarray, " p"]
    intercept_: float

    def __init__(self, reml=True, random_slopes=None, *, group_col=None, allow_no_groups=False):
        self.reml = reml
        self.random_slopes = random_slopes
        self.group_col = group_col
        self.allow_no_groups = allow_no_groups

    def plain_estimator(self):
        """``LinearRegression()``: the fixed part without random effects."""
        return LinearRegression()

    def _fit_mixed(self, frame: pd.DataFrame) -> None:
        self.results_ = fit_reml(self._fitted_formula(), frame, reml=self.reml)
        names = [f"x{k}" for k in range(self._n_fixed())]
        fixed = self.results_.fixed_effects
        self.coef_ = fixed.reindex(names, fill_value=0.0).to_numpy(dtype=np.float64)
        self.intercept_ = float(fixed.at["(Intercept)"])

    def _fit_fixed_only(self) -> None:
        assert isinstance(self.fixed_only_, LinearRegression), (
            "fit fits plain_estimator(): a LinearRegression"
        )
        self.results_ = None
        self.coef_ = np.asarray(self.fixed_only_.coef_, dtype=np.float64).copy()
        self.intercept_ = float(self.fixed_only_.intercept_)

    def _predict_mixed(self, frame: pd.DataFrame, include_random: bool) -> np.ndarray:
        assert self.results_ is not None, "a fit with groups holds its results"
        return self.results_.predict(frame, include_random=include_random)

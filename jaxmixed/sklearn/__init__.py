"""scikit-learn estimators for mixed models: grouped cross-validation, grid search, pipelines.

Three regressors with a random intercept per cluster (optionally random
slopes, correlated with it) and a fixed part that is linear
(:class:`MixedLMRegressor`, lme4's model by :func:`jaxmixed.fit_reml`), an
equinox MLP (:class:`MixedNNRegressor`, :func:`jaxmixed.fit_mixed_nn`) or any
scikit-learn regressor (:class:`MixedEMRegressor`, mixedML's EM by
:func:`jaxmixed.fit_mixed_em`). Each has ``fit(X, y, groups=None)``,
``predict(X, groups=None)`` and ``score(X, y, groups=None)``, and
``plain_estimator()``: the same fixed part without random effects
(:class:`NNRegressor` is the plain MLP). :func:`cross_validate_mixed` runs the
grouped cross-validation of the mixedML paper and flexcv.

The cluster labels: three ways
------------------------------
``fit`` needs each row's cluster label. Give them one of three ways (the
guide's page "scikit-learn" shows each with code):

- ``group_col``, a column of X: an int is its position (negative counts from
  the end), a str its name in a DataFrame X; the other columns are the
  features (``random_slopes`` counts among them). scikit-learn's tools pass X
  whole to fit, predict and score, so this works in them as they are,
  without metadata routing: ``cross_val_score(MixedLMRegressor(
  group_col="school"), X, y, groups=X["school"], cv=GroupKFold(5))`` (that
  ``groups`` reaches the splitter only), ``GridSearchCV`` and ``Pipeline``.
  In a Pipeline keep the label column out of scaling: a
  ``ColumnTransformer`` with ``"passthrough"`` for it, listed first (then
  ``group_col=0``) or named in a DataFrame out
  (``.set_output(transform="pandas")``). ``n_features_in_`` and
  ``feature_names_in_`` count the label column.
- ``groups=``, called directly: ``est.fit(X, y, groups=g)``,
  ``est.predict(X, groups=g)``, ``est.score(X, y, groups=g)``.
- Metadata routing: ``sklearn.set_config(enable_metadata_routing=True)``
  once, then ``cross_validate(est, X, y, cv=GroupKFold(5),
  params={"groups": g})`` or ``GridSearchCV(est, grid,
  cv=GroupKFold(5)).fit(X, y, groups=g)``. fit requests ``groups`` (the
  splitter receives them too); predict and score do not, so scores are of
  the population prediction unless ``est.set_score_request(groups=True)``
  (within-cluster scores, e.g. ``KFold`` over rows, clusters seen in
  training); ``Pipeline.predict(X, groups=g)`` needs
  ``set_predict_request(groups=True)``. With ``group_col`` set, fit requests
  no ``groups``: the labels come from X.

``groups=`` together with ``group_col`` is an error. A cluster not seen in
fitting gets the population prediction (random effects 0), with a warning
that counts its rows; under ``GroupKFold`` every test cluster is unseen.

Fits without labels
-------------------
A fit without labels (no ``groups=``, no ``group_col``, none routed) is a
ValueError, unless ``allow_no_groups=True``. Then it is a single cluster,
whose random effects cannot be told apart from the fixed intercept (and
slopes): the model is fitted as its variance-at-zero limit, the fixed part
alone (``plain_estimator()``; for the linear model exactly the REML/ML
estimate of the fixed effects), with a :class:`NoGroupsWarning`;
``results_`` / ``model_`` are None and ``fixed_only_`` holds the fit.
scikit-learn's estimator checks pass with ``allow_no_groups=True``, and with
``group_col=0`` once that column is binned: the checks pass random floats,
which as labels make one cluster per row, and such effects are not
identifiable from the residual (``fit_reml`` refuses them).
"""

from ._cv import cross_validate_mixed
from ._em import MixedEMRegressor
from ._linear import MixedLMRegressor
from ._mixed import NoGroupsWarning
from ._neural import MixedNNRegressor
from ._plain import NNRegressor

__all__ = [
    "MixedEMRegressor",
    "MixedLMRegressor",
    "MixedNNRegressor",
    "NNRegressor",
    "NoGroupsWarning",
    "cross_validate_mixed",
]

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

Passing ``groups`` through scikit-learn
---------------------------------------
``fit`` needs the cluster labels. Called directly, pass them:
``est.fit(X, y, groups=g)``. Inside scikit-learn's tools, enable metadata
routing once, ``sklearn.set_config(enable_metadata_routing=True)``, and give
the labels as metadata: ``cross_validate(est, X, y, cv=GroupKFold(5),
params={"groups": g})`` or ``GridSearchCV(est, grid, cv=GroupKFold(5)).fit(X,
y, groups=g)``. The estimators request ``groups`` for ``fit`` by default (the
splitter receives them too), and not for ``predict`` and ``score``: scores
are then of the population prediction, which is also what clusters unseen in
training get. For within-cluster scores (e.g. ``KFold`` over rows, clusters
seen in training) call ``est.set_score_request(groups=True)``. Without
routing, ``cross_validate(..., groups=g, params={"groups": g})`` works, but
``GridSearchCV`` and ``Pipeline.score`` cannot pass ``groups`` to the
estimator: its ``fit`` then gets none and warns (:class:`NoGroupsWarning`).

Fits without ``groups``: a single cluster, whose random effects cannot be told
apart from the fixed intercept (and slopes). The model is then fitted as its
variance-at-zero limit, the fixed part alone (``plain_estimator()``; for the
linear model exactly the REML/ML estimate of the fixed effects), with a
:class:`NoGroupsWarning`. This keeps scikit-learn's generic checks and tools
that cannot pass ``groups`` working, and never presents it as a mixed fit:
``results_`` / ``model_`` are None and ``fixed_only_`` holds the fit.
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

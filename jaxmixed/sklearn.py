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

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast

try:
    from sklearn.base import BaseEstimator, RegressorMixin, clone
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold, KFold
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as err:  # absent, or older than 1.6 (validate_data, __sklearn_tags__)
    raise ImportError(
        "jaxmixed.sklearn needs scikit-learn>=1.6: pip install jaxmixed[sklearn] "
        "(or pip install 'scikit-learn>=1.6')"
    ) from err

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from .core._mixed_loss import jit_network_output
from .core._status import RESULTS
from .linear._api import fit_reml
from .linear._results import MixedModelResults
from .networks._api import fit_mixed_em, fit_mixed_nn
from .networks._data import plain_rows
from .networks._options import TrainOptions
from .networks._plain import train_plain
from .networks._prepare import split_rows
from .networks._results import FixedPart, MixedNNResults

__all__ = [
    "MixedEMRegressor",
    "MixedLMRegressor",
    "MixedNNRegressor",
    "NNRegressor",
    "NoGroupsWarning",
    "cross_validate_mixed",
]

_UNSEEN = "not seen in fitting"  # the library's warning for unseen levels says this


class NoGroupsWarning(UserWarning):
    """A mixed-model estimator was fitted without ``groups``: the fixed part alone was fitted."""


# ------------------------------------------------------------------ helpers


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


def _pickle_state(state: object) -> dict[str, Any]:
    """A copy of ``BaseEstimator.__getstate__``'s dict (``object.__getstate__`` gives ``__dict__`` itself)."""
    assert isinstance(state, dict), "BaseEstimator.__getstate__ gives a dict"
    return dict(state)


def _activation(activation) -> Callable:
    """A jax.nn function by name (``"relu"``, ``"tanh"``, ``"gelu"``, …) or the callable itself."""
    if callable(activation):
        return activation
    fn = getattr(jax.nn, activation, None) if isinstance(activation, str) else None
    if fn is None or not callable(fn) or activation.startswith("_"):
        raise ValueError(
            f"activation must be the name of a jax.nn function or a callable, got {activation!r}"
        )
    return fn


def _mlp(d: int, width: int, depth: int, activation, seed: int) -> eqx.nn.MLP:
    """The MLP (d,) → scalar, initialised in float32 from ``jax.random.key(seed)``.

    Both :class:`NNRegressor` and :class:`MixedNNRegressor` start from this
    network, cast to float64.
    """
    for name, value, low in (("width", width, 1), ("depth", depth, 0)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return eqx.nn.MLP(
        d, "scalar", int(width), int(depth), activation=_activation(activation),
        key=jax.random.key(seed), dtype=jnp.float32,
    )  # fmt: skip


def _to64(tree):
    """``tree`` with its floating-point arrays in float64."""
    with jax.enable_x64(True):
        return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def _array_leaves(tree: Any) -> list[np.ndarray]:
    """The arrays of a pytree as numpy (networks keep lambdas, which do not pickle)."""
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def _with_leaves(skeleton, leaves: list[np.ndarray]):
    """``skeleton`` with its arrays replaced by ``leaves`` (float64)."""
    params, static = eqx.partition(skeleton, eqx.is_array)
    with jax.enable_x64(True):
        arrays = [jnp.asarray(a) for a in leaves]
        params = jax.tree.unflatten(jax.tree.structure(params), arrays)
    return eqx.combine(params, static)


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


def _location_scale(a: Float[np.ndarray, "n ..."]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation along rows, (…) each (a deviation of 0 is taken as 1)."""
    scale = a.std(axis=0)
    return a.mean(axis=0), np.where(scale > 0, scale, 1.0)


def _check_training(est) -> None:
    """The training settings shared by :class:`NNRegressor` and :class:`MixedNNRegressor`."""
    if not (isinstance(est.learning_rate, int | float) and est.learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {est.learning_rate!r}")
    for name in ("max_epochs", "patience"):
        value = getattr(est, name)
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(est.validation_fraction, int | float) and 0 <= est.validation_fraction < 1):
        raise ValueError(f"validation_fraction must be in [0, 1), got {est.validation_fraction!r}")


def _train_network(est, net, x: np.ndarray, y: np.ndarray, seed: int):
    """``net`` trained on standardised x (n, d), y (n,) by the networks' training loop with early
    stopping on a held-out share of the rows (drawn from ``seed`` as ``fit_mixed_nn`` draws it)."""
    train, valid = split_rows(len(y), est.validation_fraction, seed)
    options = TrainOptions(
        learning_rate=float(est.learning_rate), max_epochs=int(est.max_epochs),
        patience=int(est.patience), validation_fraction=float(est.validation_fraction),
    )  # fmt: skip
    with jax.enable_x64(True):
        rows = plain_rows(x[train], y[train])
        held_out = None if valid is None else plain_rows(x[valid], y[valid])
        return train_plain(net, rows, held_out, options, verbose=bool(est.verbose))


# ------------------------------------------------------------------ the plain network


class NNRegressor(RegressorMixin, BaseEstimator):
    """An MLP regressor without random effects: the fixed part of :class:`MixedNNRegressor`.

    An ``eqx.nn.MLP`` (d features → scalar; ``width`` units in each of
    ``depth`` hidden layers) trained by full-batch Adam on the mean squared
    error of standardised X and y, in float64, with early stopping on a
    held-out share of the rows: the network of the best held-out epoch is
    kept. Same initial network and held-out rows as a :class:`MixedNNRegressor`
    with the same settings.

    Parameters
    ----------
    width : int, default=32
        Units per hidden layer.
    depth : int, default=2
        Hidden layers.
    activation : str or callable, default="relu"
        A ``jax.nn`` function by name (names pickle; a callable must pickle
        for the estimator to).
    learning_rate : float, default=3e-3
        Adam's step size (standardised units).
    max_epochs : int, default=1000
        Limit on full-batch steps.
    patience : int, default=100
        Stop when the held-out MSE has not improved for this many epochs
        (checked every 10 epochs).
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping; 0 trains on all rows
        for ``max_epochs`` epochs and keeps the last network.
    random_state : int, RandomState or None, default=0
        Seeds the initial network and the held-out rows.
    verbose : bool, default=False
        A progress bar for long fits (the training loop of :class:`MixedNNRegressor`).

    Attributes
    ----------
    network_ : eqx.nn.MLP
        The trained network (float64) of standardised features → standardised response.
    x_mean_, x_scale_ : ndarray of shape (n_features_in_,)
    y_mean_, y_scale_ : float
        The standardisation.
    best_epoch_ : int
        The epoch of the kept network.
    n_epochs_ : int
        Epochs run.
    history_ : DataFrame
        ``epoch``, ``train_mse`` and (with held-out rows) ``valid_mse``, every 10 epochs.
    result_ : jaxmixed.core.RESULTS item
        Why training stopped: ``early_stopped`` (patience), ``max_steps_reached``
        (``max_epochs``) or ``nonfinite`` (the loss became NaN or infinite: the
        best earlier network is kept, with a ``RuntimeWarning``).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When X was a DataFrame with string column names.
    """

    # Set by fit (declared for type checkers; validate_data sets n_features_in_).
    n_features_in_: int
    network_: eqx.nn.MLP
    x_mean_: Float[np.ndarray, " p"]
    x_scale_: Float[np.ndarray, " p"]
    y_mean_: float
    y_scale_: float
    best_epoch_: int
    n_epochs_: int
    history_: pd.DataFrame
    result_: RESULTS

    def __init__(
        self,
        width=32,
        depth=2,
        activation="relu",
        learning_rate=3e-3,
        max_epochs=1000,
        patience=100,
        validation_fraction=0.1,
        random_state=0,
        verbose=False,
    ):
        self.width = width
        self.depth = depth
        self.activation = activation
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        """Trains the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        X, y = _valid_xy(self, X, y)
        _check_training(self)
        seed = _seed(self.random_state)
        net = _to64(_mlp(X.shape[1], self.width, self.depth, self.activation, seed))
        self.x_mean_, self.x_scale_ = _location_scale(X)
        y_mean, y_scale = _location_scale(y)
        self.y_mean_, self.y_scale_ = float(y_mean), float(y_scale)
        xs, ys = (X - self.x_mean_) / self.x_scale_, (y - self.y_mean_) / self.y_scale_
        trained = _train_network(self, net, xs, ys, seed)
        if bool(trained.result == RESULTS.nonfinite):
            warnings.warn(trained.message, RuntimeWarning, stacklevel=2)
        self.network_, self.best_epoch_, self.n_epochs_ = trained.model, trained.best_epoch, trained.epochs
        self.history_ = pd.DataFrame.from_records(trained.history)
        self.result_ = trained.result
        return self

    def predict(self, X):
        """Predictions (n_samples,) of X (n_samples, n_features_in_)."""
        check_is_fitted(self)
        X = _valid_x(self, X)
        with jax.enable_x64(True):
            out = jit_network_output(self.network_, jnp.asarray((X - self.x_mean_) / self.x_scale_))
        return self.y_mean_ + self.y_scale_ * np.asarray(out, dtype=np.float64)

    def __getstate__(self):
        state = _pickle_state(super().__getstate__())
        if "network_" in state:  # an equinox MLP holds lambdas: pickle its arrays
            state["network_"] = _array_leaves(state["network_"])
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        leaves = getattr(self, "network_", None)
        if isinstance(leaves, list):
            skeleton = _to64(_mlp(self.n_features_in_, self.width, self.depth, self.activation, 0))
            self.network_ = _with_leaves(skeleton, leaves)


# ------------------------------------------------------------------ the mixed models


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
                stacklevel=2,
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
                    stacklevel=2,
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


class MixedLMRegressor(_MixedRegressor):
    """lme4's linear mixed model as a scikit-learn regressor (:func:`jaxmixed.fit_reml`).

    ``y = β₀ + Xβ + b₀[g] + Σ_k b_k[g]·X[:, k] + ε``: a random intercept per
    cluster ``g`` and random slopes on the columns ``random_slopes`` of X,
    correlated with it (lme4's ``y ~ x0 + … + (1 + x2 | group)``). See the
    module's documentation for passing ``groups`` through scikit-learn.

    Parameters
    ----------
    reml : bool, default=True
        REML (True) or maximum likelihood variance components.
    random_slopes : sequence of int or None, default=None
        Column indices of X with a random slope.

    Attributes
    ----------
    results_ : MixedModelResults or None
        The fit (``varcorr``, ``sigma``, ``random_effects`` …); None after a
        fit without groups.
    formula_ : str or None
        The formula fitted, on the columns ``x0 … x{d-1}``, ``y``, ``group``.
    coef_ : ndarray of shape (n_features_in_,)
        Fixed slopes (0 for a column dropped as aliased).
    intercept_ : float
        Fixed intercept.
    fixed_only_ : LinearRegression or None
        The fit without groups (None after a mixed fit).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When X was a DataFrame with string column names.
    """

    results_: MixedModelResults | None
    coef_: Float[np.ndarray, " p"]
    intercept_: float

    def __init__(self, reml=True, random_slopes=None):
        self.reml = reml
        self.random_slopes = random_slopes

    def plain_estimator(self):
        """``LinearRegression()``: the fixed part without random effects."""
        return LinearRegression()

    def _fit_mixed(self, frame: pd.DataFrame) -> None:
        self.results_ = fit_reml(self._fitted_formula(), frame, reml=self.reml)
        names = [f"x{k}" for k in range(self.n_features_in_)]
        fixed = self.results_.fixed_effects
        self.coef_ = fixed.reindex(names, fill_value=0.0).to_numpy(dtype=np.float64)
        self.intercept_ = float(fixed.at["Intercept"])

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


class MixedNNRegressor(_MixedRegressor):
    """A mixed model whose fixed part is an MLP (:func:`jaxmixed.fit_mixed_nn`).

    ``y = f(x) + β₀ + b₀[g] + Σ_k b_k[g]·X[:, k] + ε`` with ``f`` an
    ``eqx.nn.MLP`` built at fit time (``width`` units in each of ``depth``
    hidden layers, initialised from ``random_state``), trained jointly with
    the variance components (``mode="joint"``) or by mixedML's EM
    (``mode="em"``), with early stopping on held-out rows. See the module's
    documentation for passing ``groups`` through scikit-learn.

    Parameters
    ----------
    width, depth, activation : as :class:`NNRegressor` (defaults 32, 2, "relu").
    mode : {"joint", "em"}, default="joint"
    reml : bool, default=True
    learning_rate, max_epochs, patience, validation_fraction : as :class:`NNRegressor`
        (defaults 3e-3, 1000, 100, 0.1); passed to :class:`jaxmixed.TrainOptions`.
    random_slopes : sequence of int or None, default=None
        Column indices of X with a random slope.
    random_state : int, RandomState or None, default=0
        Seeds the initial network and the held-out rows.
    verbose : bool, default=False
        A progress bar for long fits.

    Attributes
    ----------
    model_ : MixedNNResults or None
        The fit (``varcorr``, ``sigma``, ``intercept``, ``history`` …); None
        after a fit without groups.
    formula_ : str or None
    fixed_only_ : NNRegressor or None
        The fit without groups (None after a mixed fit).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    """

    model_: MixedNNResults | None

    def __init__(
        self,
        width=32,
        depth=2,
        activation="relu",
        mode="joint",
        reml=True,
        learning_rate=3e-3,
        max_epochs=1000,
        patience=100,
        validation_fraction=0.1,
        random_slopes=None,
        random_state=0,
        verbose=False,
    ):
        self.width = width
        self.depth = depth
        self.activation = activation
        self.mode = mode
        self.reml = reml
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_slopes = random_slopes
        self.random_state = random_state
        self.verbose = verbose

    def plain_estimator(self):
        """An :class:`NNRegressor` with the same network and training settings."""
        return NNRegressor(
            width=self.width, depth=self.depth, activation=self.activation,
            learning_rate=self.learning_rate, max_epochs=self.max_epochs, patience=self.patience,
            validation_fraction=self.validation_fraction, random_state=self.random_state,
            verbose=self.verbose,
        )  # fmt: skip

    def _fit_mixed(self, frame: pd.DataFrame) -> None:
        _check_training(self)
        seed = _seed(self.random_state)
        # float64 before fit_mixed_nn sees it: its shape check would mix float32 and float64
        network = _to64(_mlp(self.n_features_in_, self.width, self.depth, self.activation, seed))
        options = TrainOptions(
            mode=self.mode, reml=self.reml, learning_rate=float(self.learning_rate),
            max_epochs=int(self.max_epochs), patience=int(self.patience),
            validation_fraction=float(self.validation_fraction),
        )  # fmt: skip
        self.model_ = fit_mixed_nn(
            network, self._fitted_formula(), frame, key=seed, verbose=self.verbose, options=options
        )

    def _fit_fixed_only(self) -> None:
        self.model_ = None

    def _predict_mixed(self, frame: pd.DataFrame, include_random: bool) -> np.ndarray:
        assert self.model_ is not None, "a fit with groups holds its results"
        return self.model_.predict(frame, include_random=include_random)

    def __getstate__(self):
        state = _pickle_state(super().__getstate__())
        model = state.get("model_")
        if model is not None:  # the network holds lambdas: pickle the arrays of its FixedPart
            state["model_"] = dataclasses.replace(model, model=_array_leaves(model.model))
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        model = getattr(self, "model_", None)
        if model is not None and isinstance(model.model, list):
            d = self.n_features_in_
            net = _to64(_mlp(d, self.width, self.depth, self.activation, 0))
            with jax.enable_x64(True):
                zeros = jnp.zeros(d, jnp.float64), jnp.zeros((), jnp.float64)
            skeleton = FixedPart(net, zeros[0], zeros[0], zeros[1], zeros[1])
            self.model_ = dataclasses.replace(model, model=_with_leaves(skeleton, model.model))


class MixedEMRegressor(_MixedRegressor):
    """mixedML's EM around any scikit-learn regressor (:func:`jaxmixed.fit_mixed_em`).

    ``y = f(x) + β₀ + b₀[g] + Σ_k b_k[g]·X[:, k] + ε`` with ``f`` a clone of
    ``estimator``, refitted each round to ``y − Zb̂``; the variance components
    are fitted exactly each round. See the module's documentation for passing
    ``groups`` through scikit-learn.

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
        Column indices of X with a random slope.
    verbose : bool, default=False
        A progress bar for long fits.

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
    feature_names_in_ : ndarray of shape (n_features_in_,)
    """

    _required_parameters = ["estimator"]

    model_: MixedNNResults | None
    estimator_: _Regressor | None

    def __init__(self, estimator, reml=True, max_rounds=100, tol=1e-4, random_slopes=None, verbose=False):
        self.estimator = estimator
        self.reml = reml
        self.max_rounds = max_rounds
        self.tol = tol
        self.random_slopes = random_slopes
        self.verbose = verbose

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


# ------------------------------------------------------------------ grouped cross-validation

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
        Unfitted; it is cloned for each fold.
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

""":class:`NNRegressor`: the MLP alone, without random effects.

The fixed part of :class:`MixedNNRegressor` (its ``plain_estimator()``),
trained by the networks' training loop with early stopping; its training
settings are checked here for both estimators (:func:`_check_training`).
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float

from ..core._callers import user_stacklevel
from ..core._mixed_loss import jit_network_output
from ..core._status import RESULTS
from ..networks._data import plain_rows
from ..networks._options import TrainOptions
from ..networks._plain import train_plain
from ..networks._prepare import split_rows
from ._checks import _seed, _valid_x, _valid_xy
from ._mlp import _array_leaves, _mlp, _pickle_state, _to64, _with_leaves
from ._scikit import BaseEstimator, RegressorMixin, check_is_fitted


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
            warnings.warn(trained.message, RuntimeWarning, stacklevel=user_stacklevel())
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

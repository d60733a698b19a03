""":class:`MixedNNRegressor`: a mixed model whose fixed part is an MLP (:func:`jaxmixed.fit_mixed_nn`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..networks._api import fit_mixed_nn
from ..networks._options import TrainOptions
from ..networks._results import FixedPart, MixedNNResults
from ._checks import _seed
from ._mixed import _MixedRegressor
from ._mlp import _array_leaves, _mlp, _pickle_state, _to64, _with_leaves
from ._plain import NNRegressor, _check_training


class MixedNNRegressor(_MixedRegressor):
    """A mixed model whose fixed part is an MLP (:func:`jaxmixed.fit_mixed_nn`).

    ``y = f(x) + β₀ + b₀[g] + Σ_k b_k[g]·X[:, k] + ε`` with ``f`` an
    ``eqx.nn.MLP`` built at fit time (``width`` units in each of ``depth``
    hidden layers, initialised from ``random_state``), trained jointly with
    the variance components (``mode="joint"``) or by mixedML's EM
    (``mode="em"``), with early stopping on held-out rows. See the module's
    documentation for the three ways to pass the cluster labels.

    Parameters
    ----------
    width, depth, activation : as :class:`NNRegressor` (defaults 32, 2, "relu").
    mode : {"joint", "em"}, default="joint"
    reml : bool, default=True
    learning_rate, max_epochs, patience, validation_fraction : as :class:`NNRegressor`
        (defaults 3e-3, 1000, 100, 0.1); passed to :class:`jaxmixed.TrainOptions`.
    random_slopes : sequence of int or None, default=None
        Indices of the feature columns with a random slope (without ``group_col``).
    random_state : int, RandomState or None, default=0
        Seeds the initial network and the held-out rows.
    verbose : bool, default=False
        A progress bar for long fits.
    group_col : int, str or None, default=None
        The column of X with the cluster labels, as :class:`MixedLMRegressor`'s.
    allow_no_groups : bool, default=False
        As :class:`MixedLMRegressor`'s: a fit without labels is an error unless True.

    Attributes
    ----------
    model_ : MixedNNResults or None
        The fit (``varcorr``, ``sigma``, ``intercept``, ``history`` …); None
        after a fit without groups.
    formula_ : str or None
    fixed_only_ : NNRegressor or None
        The fit without groups (None after a mixed fit).
    n_features_in_ : int
        Columns of X, ``group_col`` included.
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
        *,
        group_col=None,
        allow_no_groups=False,
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
        self.group_col = group_col
        self.allow_no_groups = allow_no_groups

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
        network = _to64(_mlp(self._n_fixed(), self.width, self.depth, self.activation, seed))
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
            d = self._n_fixed()
            net = _to64(_mlp(d, self.width, self.depth, self.activation, 0))
            with jax.enable_x64(True):
                zeros = jnp.zeros(d, jnp.float64), jnp.zeros((), jnp.float64)
            skeleton = FixedPart(net, zeros[0], zeros[0], zeros[1], zeros[1])
            self.model_ = dataclasses.replace(model, model=_with_leaves(skeleton, model.model))

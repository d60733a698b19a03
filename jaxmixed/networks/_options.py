"""The settings of a network (or estimator) fit, and the optimiser step they drive."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import optax
from jaxtyping import Array, PyTree

from ..core._options import checked_reml

__all__ = ["TrainOptions", "optimizer_step"]


class TrainOptions(eqx.Module):
    """Every setting of a network (or estimator) fit, with its default.

    Attributes:
        mode: ``"joint"`` (default) or ``"em"``.
        reml: REML (default) or ML for the variance components.
        learning_rate: the network's Adam step size (default 3e-3; features
            and response are standardised, so it does not depend on units).
        phi_learning_rate: Adam step size of φ (and log σ) in joint mode
            (default 0.02: log-scale parameters).
        optimizer: an optax ``GradientTransformation`` for the network in
            place of Adam(learning_rate).
        max_epochs: limit on passes over the training rows (default 1000;
            in EM mode it bounds the rounds to ``max_epochs / epochs_per_round``).
        patience: stop when the held-out MSE has not improved for this many
            epochs (default 100); the network of the best epoch is kept.
        validation_fraction: share of the rows held out for early stopping
            (default 0.1, drawn at random; 0 turns early stopping off).
        eval_every: epochs between checks of the held-out rows (default 10).
        batch_groups: None (default): full-batch steps; k: minibatches of k
            whole groups of the (single) grouping factor.
        epochs_per_round: EM: network epochs per round (default 20).
        max_rounds: EM: limit on rounds (default 100).
        tol: EM: stop when the generalised log-likelihood changes by less
            than ``tol`` relative (default 1e-4).
        variance_update: EM: ``"profiled"`` (default): each round fits the
            variance components to ``y − f(x)`` exactly with the core;
            ``"em"``: one step of mixedML's ML/REML EM formulas (its Table 1;
            one grouping factor; see ``jaxmixed.core._em_step``).
        solve_last_layer: EM: after each round's epochs, set the network's last
            linear layer (an ``eqx.nn.MLP``'s) to its least-squares solution on
            the hidden features, when that lowers the round's MSE (default
            True): the exact M-step of that layer, without which a linear
            network needs hundreds of epochs to settle and early stopping can
            end EM before the variance components do.
    """

    mode: str = eqx.field(default="joint", static=True)
    reml: bool = eqx.field(default=True, static=True)
    learning_rate: float = eqx.field(default=3e-3, static=True)
    phi_learning_rate: float = eqx.field(default=0.02, static=True)
    optimizer: optax.GradientTransformation | None = eqx.field(default=None, static=True)
    max_epochs: int = eqx.field(default=1000, static=True)
    patience: int = eqx.field(default=100, static=True)
    validation_fraction: float = eqx.field(default=0.1, static=True)
    eval_every: int = eqx.field(default=10, static=True)
    batch_groups: int | None = eqx.field(default=None, static=True)
    epochs_per_round: int = eqx.field(default=20, static=True)
    max_rounds: int = eqx.field(default=100, static=True)
    tol: float = eqx.field(default=1e-4, static=True)
    variance_update: str = eqx.field(default="profiled", static=True)
    solve_last_layer: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        _one_of("mode", self.mode, ("joint", "em"))
        _one_of("variance_update", self.variance_update, ("profiled", "em"))
        checked_reml(self.reml)
        for name in ("max_epochs", "patience", "eval_every", "epochs_per_round", "max_rounds"):
            _positive_int(name, getattr(self, name))
        if self.batch_groups is not None:
            _positive_int("batch_groups", self.batch_groups)
        for name in ("learning_rate", "phi_learning_rate", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.validation_fraction, (int, float)) and 0.0 <= self.validation_fraction < 1.0):
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.mode == "em" and self.batch_groups is not None:
            raise ValueError("batch_groups (minibatches of groups) applies to mode='joint'")
        if self.optimizer is not None and not (hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")):
            raise TypeError(f"optimizer must be an optax GradientTransformation, got {self.optimizer!r}")

    def network_optimizer(self) -> optax.GradientTransformation:
        """``optimizer``, or Adam(``learning_rate``) when it is None."""
        return self.optimizer if self.optimizer is not None else optax.adam(self.learning_rate)


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def optimizer_step(
    opt: optax.GradientTransformation, grads: PyTree[Array], state: optax.OptState, params: PyTree[Array]
) -> tuple[PyTree[Array], optax.OptState]:
    """One update of ``params`` (a pytree of arrays, e.g. a network's, shaped as ``grads``)
    by ``opt``; the new parameters (the same pytree) and optimiser state."""
    # optax mixes int32 and int64 counters in 64-bit mode: standard promotion here.
    with jax.numpy_dtype_promotion("standard"):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

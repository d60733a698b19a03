"""EM mode: mixedML's alternation between the fixed part and the random part.

Each round trains the fixed part (``_plain``: a network warm-started for
``epochs_per_round`` epochs, or an estimator refitted) on ``y − Zb̂`` by mean
squared error, then fits the variance components to ``y − f(x)``
(``_variance``), which also gives β₀ and b̂. :func:`train_em` stops when the
generalised log-likelihood changes by less than ``tol`` (relative), or on the
held-out rows' patience (``_loop.run_training``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core._status import RESULTS
from ._data import TrainingSet, jit_random_part
from ._loop import Check, Schedule, Stop, Trained, run_training
from ._options import TrainOptions
from ._plain import EstimatorFixed, NetworkFixed
from ._variance import (
    VarianceState,
    formula_variance,
    generalised_loglik,
    initial_variance,
    profiled_variance,
)

__all__ = ["train_em"]


def _usable(fit: VarianceState) -> bool:
    values = [fit.sigma, fit.theta, *fit.b]
    return bool(all(np.all(np.isfinite(v)) for v in values) and fit.sigma > 0)


def _unusable(fit: VarianceState, rnd: int) -> Stop:
    """Why the variance fit of round ``rnd`` cannot be used."""
    if not fit.sigma > 0:  # 0, or NaN: the core flags a response with nothing left to fit
        return Stop(
            RESULTS.constant_response,
            f"EM round {rnd}: the fixed part reproduces the training response exactly, so no "
            "residual variance is left to split between random effects and noise (σ̂ = 0); "
            "regularise the estimator (it interpolates the training data)",
        )
    return Stop(
        RESULTS.nonfinite,
        f"EM round {rnd}: the variance fit gave non-finite values (σ̂ = {float(fit.sigma):.3g})",
    )


class _EMRounds:
    """EM rounds as :func:`run_training`'s chunks (one round per chunk): the
    fixed part on ``y − Zb̂``, then the variance components on ``y − f(x)``."""

    def __init__(
        self,
        fixed: NetworkFixed | EstimatorFixed,
        train: TrainingSet,
        valid: TrainingSet | None,
        options: TrainOptions,
        n_levels: tuple[int, ...],
    ):
        self.fixed, self.train, self.valid = fixed, train, valid
        self.options, self.n_levels = options, n_levels
        self.update = formula_variance if options.variance_update == "em" else profiled_variance
        self.fit, self.zb = initial_variance(train, n_levels), jnp.zeros_like(train.y)
        # previous: the last round's generalised log-likelihood
        self.round, self.previous = 0, None

    def __call__(self, k: int, epoch: int) -> Check:
        self.round += 1
        loss = self.fixed.train(self.train, self.train.y - self.zb)
        f = self.fixed.predict(self.train)
        fit = self.update(self.train, f, self.fit, self.options)
        if not _usable(fit):
            return Check(None, np.nan, None, None, stop=_unusable(fit, self.round))
        self.fit, self.zb = fit, jit_random_part(fit, self.train)
        record = {"round": self.round, "epoch": epoch, "loss": loss, **self._scores(f)}
        gll, stop = record["gll"], None
        if self.previous is not None and abs(gll - self.previous) <= self.options.tol * abs(self.previous):
            stop = Stop(
                RESULTS.small_change,
                f"converged: relative change of the generalised log-likelihood below {self.options.tol:g}",
            )
        self.previous = gll
        return Check(record, gll, record.get("valid_mse"), self.fixed.snapshot(), self.fit.theta, stop)

    def _scores(self, f: Float[Array, " n"]) -> dict[str, float]:
        """The round's generalised log-likelihood, criterion, and training (held-out) MSE."""
        fit, train, valid = self.fit, self.train, self.valid
        real = np.asarray(train.mask)
        resid = np.asarray(train.y - f - fit.beta[0] - self.zb)[real]
        scores = {
            "gll": generalised_loglik(fit, resid, self.n_levels),
            "objective": float(fit.objective),
            "train_mse": float(np.mean(resid**2)),
        }
        if valid is not None:
            pred = self.fixed.predict(valid) + fit.beta[0] + jit_random_part(fit, valid)
            scores["valid_mse"] = float(jnp.mean((valid.y - pred)[np.asarray(valid.mask)] ** 2))
        return scores


def _check_em(options: TrainOptions, train: TrainingSet) -> None:
    n_factors = len(train.model_rows().structures)
    if options.variance_update == "em" and n_factors != 1:
        raise ValueError(
            "variance_update='em' (mixedML's EM formulas) is implemented for one grouping factor; "
            f"the formula has {n_factors}: use variance_update='profiled'"
        )


def train_em(
    model: Any,
    train: TrainingSet,
    valid: TrainingSet | None,
    options: TrainOptions,
    *,
    n_levels: tuple[int, ...],
    estimator: bool = False,
    verbose: bool = True,
) -> Trained:
    """mixedML's EM alternation (see the module docstring) for a network or an estimator.

    ``estimator``: ``model`` is a regressor with ``fit``/``predict`` (else
    an equinox network); ``n_levels``: the real number of levels per factor
    (for the generalised log-likelihood; the statistics may carry padding
    levels). Each round counts ``epochs_per_round`` epochs of a network (one
    for an estimator) in ``history`` and ``best_epoch``.
    """
    _check_em(options, train)
    fixed = (EstimatorFixed if estimator else NetworkFixed)(model, options)
    per_round = fixed.epochs_per_round
    schedule = Schedule(
        fixed.rounds() * per_round, per_round, options.patience, unit="round", limit=fixed.limit, shown="gll"
    )
    rounds = _EMRounds(fixed, train, valid, options, n_levels)
    return run_training(rounds, schedule, held_out=valid is not None, verbose=verbose)

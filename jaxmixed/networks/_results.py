"""Results of a mixed model with a learned fixed part (a network or any estimator)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from ..core._mixed_loss import jit_network_output
from ..core._status import RESULTS
from ..design._design import Design
from ..linear._results import MixedModelResults, fixed_matrix, random_part

__all__ = ["FixedPart", "MixedNNResults"]


class FixedPart(eqx.Module):
    """A trained network as a function of one raw feature row (p,) → scalar.

    ``f(x) = y_mean + y_scale · network((x − x_mean) / x_scale)``: the network
    was trained on standardised features and response; this wraps it back to
    the user's units (without the intercept β₀ of the random part's model).
    Pure: jit, vmap and grad it like any equinox module.
    """

    network: Callable
    x_mean: Float[Array, " p"]
    x_scale: Float[Array, " p"]
    y_mean: Float[Array, ""]
    y_scale: Float[Array, ""]

    def __call__(self, x: Float[Array, " p"]) -> Float[Array, ""]:
        out = self.network((x - self.x_mean) / self.x_scale)
        return self.y_mean + self.y_scale * jnp.reshape(out, ())


@dataclasses.dataclass(frozen=True, eq=False)
class MixedNNResults:
    """A mixed model ``y = f(x) + β₀ + Zb + ε`` with a learned ``f``.

    Attributes:
        model: the trained fixed part: a :class:`FixedPart` (networks, an
            equinox module of a raw feature row) or the fitted estimator.
        mode: ``"joint"``, ``"em"`` or ``"estimator-em"``.
        reml: whether the variance components are REML (else ML) estimates.
        feature_names: the columns of the fixed part the model takes, in order.
        random_model: the linear mixed model of the residual ``y − f(x)``
            fitted by the core on all rows at the kept ``f`` (intercept β₀,
            variance components, σ, conditional modes): a
            :class:`MixedModelResults`.
        history: one row per check (epoch or EM round): training loss,
            training and held-out MSE, and for EM the generalised
            log-likelihood (``gll``, −2 times) and the criterion.
        best_epoch: the epoch whose state was kept (early stopping).
        stopped: why training stopped, in words (with its epochs or tolerance).
        result: why training stopped, a :class:`jaxmixed.core.RESULTS` item:
            ``early_stopped`` (held-out patience), ``max_steps_reached``
            (``max_epochs`` or ``max_rounds``), ``small_change`` (EM's relative
            change below ``tol``), or, with an earlier state kept, ``nonfinite``
            (the loss or EM's variance fit became NaN/inf) or
            ``constant_response`` (EM's fixed part left no residual variance).
            ``RESULTS[result]`` is its description.
        fitted, fitted_fixed, residuals: (n,) on the training data
            (``fitted_fixed = f(x) + β₀``).
    """

    model: Any
    mode: str
    reml: bool
    feature_names: tuple[str, ...]
    random_model: MixedModelResults
    history: pd.DataFrame
    best_epoch: int
    stopped: str
    result: RESULTS
    fitted: Float[np.ndarray, " n"]
    fitted_fixed: Float[np.ndarray, " n"]
    residuals: Float[np.ndarray, " n"]
    design: Design = dataclasses.field(repr=False)
    x_dtype: DTypeLike = dataclasses.field(default=jnp.float64, repr=False)

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components, as ``fit_reml``'s ``varcorr`` (lme4's names)."""
        return self.random_model.varcorr

    @property
    def sigma(self) -> float:
        """Residual standard deviation σ̂."""
        return self.random_model.sigma

    @property
    def theta(self) -> pd.Series:
        """lme4's θ of the random part."""
        return self.random_model.theta

    @property
    def intercept(self) -> float:
        """β₀: the constant the random part's model adds to ``f(x)``."""
        return float(self.random_model.fixed_effects.iloc[0])

    @property
    def random_effects(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor (rows: levels)."""
        return self.random_model.random_effects

    @property
    def singular(self) -> bool:
        """A variance component at exactly 0."""
        return self.random_model.singular

    @property
    def converged(self) -> bool:
        """Whether the final fit of the variance components converged."""
        return self.random_model.converged

    def fixed_predict(self, x: Float[np.ndarray, "n p"]) -> Float[np.ndarray, " n"]:
        """``f(x) + β₀`` (n,) for a feature matrix x (n, p) in ``feature_names`` order."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"x must be (n, {len(self.feature_names)}); got shape {x.shape}")
        if isinstance(self.model, FixedPart):
            with jax.enable_x64(True):
                out = np.asarray(jit_network_output(self.model, jnp.asarray(x, self.x_dtype)), dtype=float)
        else:
            out = np.asarray(self.model.predict(x), dtype=float).reshape(-1)
        return out + self.intercept

    def predict(
        self, newdata: pd.DataFrame | None = None, include_random: bool = True
    ) -> Float[np.ndarray, " n"]:
        """Predictions ``f(x) + β₀ (+ Zb̂)``.

        Args:
            newdata: a DataFrame with the columns the formula uses; None gives
                the fitted values on the training data.
            include_random: add each grouping factor's conditional mode for
                the row's level; a level not seen in training gets ``f(x) + β₀``
                for that factor, and a warning says how many rows that was.
        """
        if newdata is None:
            return (self.fitted if include_random else self.fitted_fixed).copy()
        pred = self.fixed_predict(fixed_matrix(self.design, newdata, list(self.feature_names)))
        if include_random:
            pred = pred + random_part(self.random_model, newdata)
        return pred

    def summary(self) -> str:
        """A printable account: training, variance components, σ."""
        kind = {"joint": "network, trained jointly", "em": "network, trained by EM"}.get(
            self.mode, f"{type(self.model).__name__}, by EM"
        )
        vc = self.varcorr.copy()
        lines = [
            f"Mixed model with a learned fixed part ({kind}; {'REML' if self.reml else 'ML'})",
            f"Formula: {self.design.formula}",
            f"Features: {', '.join(self.feature_names)}",
            f"Training: kept epoch {self.best_epoch}; {self.stopped}",
            f"Intercept β₀ added to f(x): {self.intercept:.6g}",
            "Random effects:",
            vc.to_string(index=False),
            f"Residual SD: {self.sigma:.6g}; singular: {self.singular}; n = {len(self.fitted)}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

"""``fit_mixed_nn`` and ``fit_mixed_em``: a learned fixed part with lme4's random part.

Host side: the formula is built as ``fit_reml`` builds it (``_design``); its
fixed part, without the intercept column, gives the features; its bars give
the random part. Features and response are standardised for the network
(``FixedPart`` maps back), rows are split into training and held-out rows
(``_prepare``), ``_joint`` or ``_em`` trains, and the variance components are
then fitted by the core on all rows at the kept ``f`` (``y − f(x)`` with
``X = [1]``): the reported ``varcorr``, σ and conditional modes are the exact
ML or REML fit given f.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

from ..core._callers import user_stacklevel
from ..core._fit import jit_fit_data
from ..core._mixed_loss import GroupLayout, NeuralData, group_layout, jit_network_output
from ..core._options import FitOptions
from ..core._padding import drop_padded_levels
from ..core._statistics import design_statistics
from ..core._status import RESULTS
from ..design._design import Design, FixedTerm, ModelArrays, build_design
from ..linear._api import ConvergenceWarning
from ..linear._results import MixedModelResults, build_results
from ._em import train_em
from ._joint import train_joint
from ._loop import Trained
from ._options import TrainOptions
from ._prepare import cast_model, check_model, features, pad_rows, seed_of, split_rows, training_set
from ._results import FixedPart, MixedNNResults

__all__ = ["fit_mixed_em", "fit_mixed_nn"]


def _resolve_options(options: TrainOptions | None, given: dict[str, tuple[Any, Any]]) -> TrainOptions:
    """``options`` with the arguments given; an argument that contradicts it is an error."""
    if options is None:
        return TrainOptions(**{k: v for k, (v, _) in given.items()})
    clash = [k for k, (v, d) in given.items() if v is not d and v != d and v != getattr(options, k)]
    if clash:
        raise ValueError(
            f"{clash} given both as arguments and (differently) in options=TrainOptions(...): "
            "set them in TrainOptions only"
        )
    return options


def _final_fit(
    design: Design,
    arrays: ModelArrays,
    f_all: Float[Array, " n"],
    reml: bool,
    dtype: DTypeLike,
    start: Float[Array, " n_params"] | None = None,
) -> MixedModelResults:
    """The core's fit of ``y − f(x)`` with ``X = [1]`` on all rows, as MixedModelResults."""
    n = len(arrays.y)
    rows = training_set(np.zeros((n, 0)), arrays.y, arrays, design, np.arange(n), dtype)
    offset = jnp.asarray(pad_rows(np.asarray(f_all, float), len(rows.y)), dtype)
    options = FitOptions(reml=reml, start=start)
    result = jit_fit_data(rows.model_rows(), rows.y, options, offset=offset, n_obs=rows.n_obs)
    result = drop_padded_levels(jax.tree.map(np.asarray, result), [f.n_levels for f in design.factors])
    if not bool(result.converged):
        warnings.warn(
            f"the final fit of the variance components did not converge: {RESULTS[result.result]}",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    resid_design = dataclasses.replace(
        design,
        fixed_names=("(Intercept)",),
        all_fixed_names=("(Intercept)",),
        dropped_fixed=(),
        fixed_spec=None,
        fixed_terms=(FixedTerm("(Intercept)", (0,), (), ()),),
        fixed_frame=None,
    )
    resid_arrays = ModelArrays(
        y=arrays.y - np.asarray(f_all, float), X=np.ones((len(arrays.y), 1)), codes=arrays.codes, Z=arrays.Z
    )
    return build_results(resid_design, resid_arrays, result, reml)


def _history(records: list[dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records)


def _package(
    model: Any,
    mode: str,
    reml: bool,
    names: tuple[str, ...],
    design: Design,
    arrays: ModelArrays,
    f_all: Float[Array, " n"],
    trained: Trained,
    dtype: DTypeLike,
) -> MixedNNResults:
    """The results: the core's final fit of the random part at ``f_all`` (n,), started at
    the trained θ, around the trained fixed part ``model``."""
    with jax.enable_x64(True):
        start = jnp.asarray(trained.theta, dtype)
        random_model = _final_fit(design, arrays, jnp.asarray(f_all, dtype), reml, dtype, start)
    f_host = np.asarray(f_all, float)
    fixed = f_host + random_model.fitted_fixed
    fitted = f_host + random_model.fitted
    return MixedNNResults(
        model=model,
        mode=mode,
        reml=reml,
        feature_names=names,
        random_model=random_model,
        history=_history(trained.history),
        best_epoch=trained.best_epoch,
        stopped=trained.message,
        result=trained.result,
        fitted=fitted,
        fitted_fixed=fixed,
        residuals=arrays.y - fitted,
        design=design,
        x_dtype=dtype,
    )


def fit_mixed_nn(
    model: Callable,
    formula: str,
    data: pd.DataFrame,
    *,
    mode: str = "joint",
    reml: bool = True,
    optimizer: optax.GradientTransformation | None = None,
    max_epochs: int = 1000,
    key: jax.Array | int | None = None,
    verbose: bool = True,
    options: TrainOptions | None = None,
    dtype: DTypeLike = jnp.float64,
    missing: str = "raise",
) -> MixedNNResults:
    """Fits ``y = f(x) + β₀ + Zb + ε`` with ``f`` an equinox network and lme4's random part.

    Args:
        model: an ``eqx.Module`` (or any JAX-traceable callable pytree) mapping
            one row of features (d,) to a scalar, e.g.
            ``eqx.nn.MLP(d, "scalar", 32, 2, key=key)``. It sees standardised
            features and predicts the standardised response; ``result.model``
            wraps it back to the user's units.
        formula: lme4's, e.g. ``"y ~ x1 + x2 + C(site) + (1 + x1 | g)"``. The
            fixed part without its intercept gives the features (built by
            formulaic: transformations, one-hot categories); the bars give the
            random part (correlated slopes, ``||``, several factors).
        data: a DataFrame with the columns the formula uses.
        mode: ``"joint"`` (default): network and variance parameters trained
            together with Adam on lme4's criterion of ``y − f(x)`` (β₀ and σ
            profiled; see ``jaxmixed.core._mixed_loss``). ``"em"``: mixedML's EM
            alternation (network on ``y − Zb̂``, then an exact fit of the
            variance components).
        reml: REML (default) or ML variance components.
        optimizer: an optax transformation for the network (default Adam with
            ``options.learning_rate``).
        max_epochs: limit on epochs (passes over the training rows).
        key: a ``jax.random`` key (or int seed) for the held-out split and
            minibatch order; default seed 0.
        verbose: a progress bar (tqdm if installed, else lines) for fits
            taking more than a second.
        options: a :class:`TrainOptions` with every setting (learning rates,
            patience, validation_fraction, batch_groups, EM settings); its
            ``mode``, ``reml``, ``optimizer``, ``max_epochs`` must agree with
            those arguments if both are given.
        dtype: float64 (default) or float32 for the training.
        missing: ``"raise"`` or ``"drop"`` rows with missing values.

    Returns:
        A :class:`MixedNNResults`: the trained fixed part, ``varcorr``, σ,
        conditional modes, the history, ``predict``.
    """
    options = _resolve_options(
        options,
        {
            "mode": (mode, "joint"),
            "reml": (reml, True),
            "optimizer": (optimizer, None),
            "max_epochs": (max_epochs, 1000),
        },
    )
    design, arrays = build_design(formula, data, missing=missing)
    x, names = features(design, arrays)
    dtype = jnp.dtype(dtype)
    with jax.enable_x64(True):
        model = cast_model(model, dtype)
        check_model(model, x.shape[1], names, dtype)
        fixed, trained = _train_network(model, design, arrays, x, options, dtype, seed_of(key), verbose)
        f_all = jit_network_output(fixed, jnp.asarray(x, dtype))
    # θ is σ-relative, so standardising y leaves it unchanged: the trained θ starts the final fit.
    return _package(fixed, options.mode, options.reml, names, design, arrays, f_all, trained, dtype)


def _train_network(
    model: Callable,
    design: Design,
    arrays: ModelArrays,
    x: Float[np.ndarray, "n p"],
    options: TrainOptions,
    dtype: DTypeLike,
    seed: int,
    verbose: bool,
) -> tuple[FixedPart, Trained]:
    """Standardises, splits off the held-out rows, trains; returns (FixedPart, Trained)."""
    x_mean, x_scale = x.mean(0), x.std(0)
    x_scale = np.where(x_scale > 0, x_scale, 1.0)
    y_mean, y_scale = arrays.y.mean(), arrays.y.std()
    xs, ys = (x - x_mean) / x_scale, (arrays.y - y_mean) / y_scale
    train_idx, valid_idx = split_rows(len(ys), options.validation_fraction, seed)
    train = training_set(xs, ys, arrays, design, train_idx, dtype)
    valid = None if valid_idx is None else training_set(xs, ys, arrays, design, valid_idx, dtype, rows=False)
    if options.mode == "joint":
        data_nn = NeuralData(train.x, train.y, train.mask, design_statistics(train.model_rows(), train.n_obs))
        layout = _group_layout(design, arrays, train_idx, options)
        trained = train_joint(
            model, data_nn, train, valid, options, layout=layout, seed=seed, verbose=verbose
        )
    else:
        levels = tuple(f.n_levels for f in design.factors)
        trained = train_em(model, train, valid, options, n_levels=levels, verbose=verbose)
    as_array = [jnp.asarray(v, dtype) for v in (x_mean, x_scale, y_mean, y_scale)]
    return FixedPart(trained.model, *as_array), trained


def _group_layout(
    design: Design, arrays: ModelArrays, train_idx: Int[np.ndarray, " n_train"], options: TrainOptions
) -> GroupLayout | None:
    if options.batch_groups is None:
        return None
    if len(design.factors) != 1:
        raise ValueError(
            f"batch_groups needs one grouping factor (the likelihood is then a sum over its groups); "
            f"the formula has {len(design.factors)}: {[f.name for f in design.factors]}"
        )
    return group_layout(arrays.codes[0][train_idx], design.factors[0].n_levels)


def fit_mixed_em(
    estimator: Any,
    formula: str,
    data: pd.DataFrame,
    *,
    reml: bool = True,
    max_rounds: int = 100,
    tol: float = 1e-4,
    variance_update: str = "profiled",
    verbose: bool = True,
    missing: str = "raise",
) -> MixedNNResults:
    """mixedML's EM around any regressor with ``fit(X, y)`` and ``predict(X)``.

    Each round fits ``estimator`` to ``y − Zb̂`` on the formula's features
    (raw: put scaling in a scikit-learn ``Pipeline`` where the estimator needs
    it), then fits the variance components to ``y − f(x)`` exactly with the
    core (ML or REML, warm-started), which gives β₀ and b̂; it stops when the
    generalised log-likelihood changes by less than ``tol`` (relative) or
    after ``max_rounds``. The estimator is refitted each round (not copied).

    Args:
        estimator: e.g. ``sklearn.svm.SVR()``, ``RandomForestRegressor()``.
        formula: as in :func:`fit_mixed_nn`.
        data: as in :func:`fit_mixed_nn`.
        reml: as in :func:`fit_mixed_nn`.
        max_rounds: limit on EM rounds (default 100).
        tol: relative change of the generalised log-likelihood that stops EM.
        variance_update: ``"profiled"`` (default; an exact core fit of the
            variance components each round) or ``"em"`` (one step of
            mixedML's EM formulas per round; one grouping factor).
        verbose: a progress bar for fits taking more than a second.
        missing: as in :func:`fit_mixed_nn`.

    Returns:
        A :class:`MixedNNResults` whose ``model`` is the fitted estimator.
    """
    for method in ("fit", "predict"):
        if not callable(getattr(estimator, method, None)):
            raise TypeError(
                f"estimator must have fit(X, y) and predict(X) methods; {type(estimator).__name__} "
                f"has no {method}()"
            )
    options = TrainOptions(
        mode="em",
        reml=reml,
        max_rounds=max_rounds,
        tol=tol,
        validation_fraction=0.0,
        variance_update=variance_update,
    )
    design, arrays = build_design(formula, data, missing=missing)
    x, names = features(design, arrays)
    dtype = jnp.dtype(jnp.float64)
    with jax.enable_x64(True):
        train = training_set(x, arrays.y, arrays, design, np.arange(len(arrays.y)), dtype)
        levels = tuple(f.n_levels for f in design.factors)
        trained = train_em(estimator, train, None, options, n_levels=levels, estimator=True, verbose=verbose)
        f_all = jnp.asarray(np.asarray(trained.model.predict(x), dtype=float).reshape(-1), dtype)
    return _package(trained.model, "estimator-em", reml, names, design, arrays, f_all, trained, dtype)

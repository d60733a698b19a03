"""``fit_mixed_nn`` and ``fit_mixed_em``: a learned fixed part with lme4's random part.

Host side: the formula is built as ``fit_reml`` builds it (``_design``); its
fixed part, without the intercept column, gives the features; its bars give
the random part. Features and response are standardised for the network
(``FixedPart`` maps back), rows are split into training and held-out rows,
``_train`` trains, and the variance components are then fitted by the core
on all rows at the kept ``f`` (``y − f(x)`` with ``X = [1]``): the reported
``varcorr``, σ and conditional modes are the exact ML or REML fit given f.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..core._fit import jit_fit_data
from ..core._mixed_loss import NeuralData, group_layout, jit_network_output
from ..core._options import FitOptions
from ..core._padding import LINEAR_BITS, bucket, drop_padded_levels, pad_to_buckets, padded_levels
from ..core._statistics import ModelData, design_statistics, model_data
from ..core._status import RESULTS
from ..design._design import Design, ModelArrays, build_design
from ..linear._api import ConvergenceWarning
from ..linear._results import build_results
from ._results import FixedPart, MixedNNResults
from ._train import TrainingSet, TrainOptions, train_em, train_joint

__all__ = ["fit_mixed_em", "fit_mixed_nn"]


def _features(design: Design, arrays: ModelArrays) -> tuple[np.ndarray, tuple[str, ...]]:
    """The fixed part's columns without the intercept: (n, d) and their names."""
    keep = [k for k, name in enumerate(design.fixed_names) if name != "Intercept"]
    names = tuple(design.fixed_names[k] for k in keep)
    if not names:
        raise ValueError(
            f"the formula {design.formula!r} names no features for the fixed part: "
            "write them on the right of ~, e.g. 'y ~ x1 + x2 + (1 | g)'"
        )
    return arrays.X[:, keep], names


def _pad_rows(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` (n, …) with zero rows appended up to ``size`` rows."""
    return np.concatenate([a, np.zeros((size - len(a),) + a.shape[1:], a.dtype)])


def _random_rows(arrays: ModelArrays, design: Design, index: np.ndarray, dtype) -> ModelData:
    """The core's ModelData of ``X = [1]`` and the random part of rows ``index``, padded
    as ``fit_reml`` pads (``core._padding``): levels to ``padded_levels``, rows (X = Z = 0,
    weight 1), cross entries and pairs to their buckets. On the device."""
    z, codes = [zf[index] for zf in arrays.Z], [c[index] for c in arrays.codes]
    levels = padded_levels([f.n_levels for f in design.factors])
    ones = np.ones((len(index), 1))
    data = model_data(ones, z, codes, levels, design.structures, dtype=dtype, on_device=False)
    return jax.device_put(pad_to_buckets(data))


def _training_set(
    x: np.ndarray,
    y: np.ndarray,
    arrays: ModelArrays,
    design: Design,
    index: np.ndarray,
    dtype,
    rows: bool = True,
) -> TrainingSet:
    """Rows ``index`` of x (n, d), y (n,) and the design's random part, padded with zeros.

    With ``rows`` (default) the core's ModelData of ``X = [1]`` and the random
    part is built and padded by the shared mechanism (:func:`_random_rows`),
    and x, y, z and the codes are padded to its rows; held-out rows
    (``rows=False``) need only x, y, z and codes, padded to the same bucket
    of rows (``pad_to_buckets``' rule, ``bucket(n, LINEAR_BITS)``), so that
    similar data sets share compiled steps.
    """
    n = len(index)
    data = _random_rows(arrays, design, index, dtype) if rows else None
    size = data.X.shape[0] if rows else bucket(n, LINEAR_BITS)
    return TrainingSet(
        x=jnp.asarray(_pad_rows(x[index], size), dtype),
        y=jnp.asarray(_pad_rows(y[index], size), dtype),
        mask=jnp.asarray(np.arange(size) < n),
        z=tuple(jnp.asarray(_pad_rows(zf[index], size), dtype) for zf in arrays.Z),
        codes=tuple(jnp.asarray(_pad_rows(c[index], size), jnp.int32) for c in arrays.codes),
        rows=data,
        n_obs=jnp.asarray(n, dtype),
    )


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Training and held-out row indices (sorted) of ``n`` rows: a random ``fraction``
    held out (None when it rounds to no row), drawn from ``seed``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    n_valid = int(round(fraction * n))
    if n_valid == 0:
        return np.arange(n), None
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def _seed(key) -> int:
    if key is None:
        return 0
    if isinstance(key, int | np.integer):
        return int(key)
    data = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return int(np.uint32(data.ravel()[-1]))


def _check_model(model, d: int, names: tuple[str, ...], dtype) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable equinox Module, got {type(model).__name__}")
    try:
        out = jax.eval_shape(model, jax.ShapeDtypeStruct((d,), dtype))
    except Exception as err:  # noqa: BLE001 - any failure here is a shape mismatch to report
        raise ValueError(
            f"the model could not be applied to one row of the {d} features {list(names)} "
            f"(a vector of shape ({d},)): {type(err).__name__}: {err}"
        ) from None
    shape = getattr(out, "shape", None)
    if shape not in ((), (1,)):
        raise ValueError(
            f"the model must map a row of features (shape ({d},)) to a scalar (shape () or (1,)); "
            f"it returned shape {shape}: give it one output, e.g. eqx.nn.MLP(..., out_size='scalar')"
        )


def _cast(model, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model)


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


def _final_fit(design, arrays, f_all, reml, dtype, start=None):
    """The core's fit of ``y − f(x)`` with ``X = [1]`` on all rows, as MixedModelResults."""
    n = len(arrays.y)
    rows = _training_set(np.zeros((n, 0)), arrays.y, arrays, design, np.arange(n), dtype)
    offset = jnp.asarray(_pad_rows(np.asarray(f_all, float), len(rows.y)), dtype)
    options = FitOptions(reml=reml, start=start)
    result = jit_fit_data(rows.rows, rows.y, options, offset=offset, n_obs=rows.n_obs)
    result = drop_padded_levels(jax.tree.map(np.asarray, result), [f.n_levels for f in design.factors])
    if not bool(result.converged):
        warnings.warn(
            f"the final fit of the variance components did not converge: {RESULTS[result.result]}",
            ConvergenceWarning,
            stacklevel=3,
        )
    resid_design = dataclasses.replace(
        design, fixed_names=("Intercept",), all_fixed_names=("Intercept",), dropped_fixed=(), fixed_spec=None
    )
    resid_arrays = ModelArrays(
        y=arrays.y - np.asarray(f_all, float), X=np.ones((len(arrays.y), 1)), codes=arrays.codes, Z=arrays.Z
    )
    return build_results(resid_design, resid_arrays, result, reml)


def _history(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records)


def _package(model, mode, reml, names, design, arrays, f_all, trained, dtype) -> MixedNNResults:
    with jax.enable_x64(True):
        start = jnp.asarray(trained.theta, dtype)
        random_model = _final_fit(design, arrays, jnp.asarray(f_all, dtype), reml, dtype, start)
    f_all = np.asarray(f_all, float)
    fixed = f_all + random_model.fitted_fixed
    fitted = f_all + random_model.fitted
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
    model,
    formula: str,
    data: pd.DataFrame,
    *,
    mode: str = "joint",
    reml: bool = True,
    optimizer=None,
    max_epochs: int = 1000,
    key=None,
    verbose: bool = True,
    options: TrainOptions | None = None,
    dtype=jnp.float64,
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
            profiled; see ``jaxmixed._mixed_loss``). ``"em"``: mixedML's EM
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
    if options.mode not in ("joint", "em"):
        raise ValueError(f"mode must be 'joint' or 'em', got {options.mode!r}")
    if options.mode == "em" and options.batch_groups is not None:
        raise ValueError("batch_groups (minibatches of groups) applies to mode='joint'")
    design, arrays = build_design(formula, data, missing=missing)
    x, names = _features(design, arrays)
    dtype = jnp.dtype(dtype)
    with jax.enable_x64(True):
        model = _cast(model, dtype)
        _check_model(model, x.shape[1], names, dtype)
        fixed, trained = _train_network(model, design, arrays, x, options, dtype, _seed(key), verbose)
        f_all = jit_network_output(fixed, jnp.asarray(x, dtype))
    # θ is σ-relative, so standardising y leaves it unchanged: the trained θ starts the final fit.
    return _package(fixed, options.mode, options.reml, names, design, arrays, f_all, trained, dtype)


def _train_network(model, design, arrays, x, options: TrainOptions, dtype, seed: int, verbose: bool):
    """Standardises, splits off the held-out rows, trains; returns (FixedPart, Trained)."""
    x_mean, x_scale = x.mean(0), x.std(0)
    x_scale = np.where(x_scale > 0, x_scale, 1.0)
    y_mean, y_scale = arrays.y.mean(), arrays.y.std()
    xs, ys = (x - x_mean) / x_scale, (arrays.y - y_mean) / y_scale
    train_idx, valid_idx = _split(len(ys), options.validation_fraction, seed)
    train = _training_set(xs, ys, arrays, design, train_idx, dtype)
    valid = None if valid_idx is None else _training_set(xs, ys, arrays, design, valid_idx, dtype, rows=False)
    if options.mode == "joint":
        data_nn = NeuralData(train.x, train.y, train.mask, design_statistics(train.rows, train.n_obs))
        layout = _group_layout(design, arrays, train_idx, options)
        trained = train_joint(
            model, data_nn, train, valid, options, layout=layout, seed=seed, verbose=verbose
        )
    else:
        levels = tuple(f.n_levels for f in design.factors)
        trained = train_em(model, train, valid, options, n_levels=levels, verbose=verbose)
    as_array = [jnp.asarray(v, dtype) for v in (x_mean, x_scale, y_mean, y_scale)]
    return FixedPart(trained.model, *as_array), trained


def _group_layout(design: Design, arrays: ModelArrays, train_idx: np.ndarray, options: TrainOptions):
    if options.batch_groups is None:
        return None
    if len(design.factors) != 1:
        raise ValueError(
            f"batch_groups needs one grouping factor (the likelihood is then a sum over its groups); "
            f"the formula has {len(design.factors)}: {[f.name for f in design.factors]}"
        )
    if options.batch_groups < 1:
        raise ValueError(f"batch_groups must be a positive number of groups, got {options.batch_groups}")
    return group_layout(arrays.codes[0][train_idx], design.factors[0].n_levels)


def fit_mixed_em(
    estimator,
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
        formula, data, reml, missing: as :func:`fit_mixed_nn`.
        max_rounds: limit on EM rounds (default 100).
        tol: relative change of the generalised log-likelihood that stops EM.
        variance_update: ``"profiled"`` (default; an exact core fit of the
            variance components each round) or ``"em"`` (one step of
            mixedML's EM formulas per round; one grouping factor).
        verbose: a progress bar for fits taking more than a second.

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
    x, names = _features(design, arrays)
    dtype = jnp.dtype(jnp.float64)
    with jax.enable_x64(True):
        train = _training_set(x, arrays.y, arrays, design, np.arange(len(arrays.y)), dtype)
        levels = tuple(f.n_levels for f in design.factors)
        trained = train_em(estimator, train, None, options, n_levels=levels, estimator=True, verbose=verbose)
        f_all = jnp.asarray(np.asarray(trained.model.predict(x), dtype=float).reshape(-1), dtype)
    return _package(trained.model, "estimator-em", reml, names, design, arrays, f_all, trained, dtype)

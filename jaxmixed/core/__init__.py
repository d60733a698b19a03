"""The pure layer: the JAX functions of pytrees that ``fit_reml`` is built from.

Everything here is pure JAX over ``eqx.Module`` pytrees (jit, vmap,
reverse-mode grad) plus the host helpers that build its integer structure
with numpy; this package never imports pandas or formulaic (a test enforces
it). ``solve`` and ``Solution`` work in the standardised units; ``fit`` maps
everything back to the user's.

The pipeline, in the order a reader meets it:

1. ``model_data(X, Z, codes, n_levels, structures)`` → :class:`ModelData` (the
   rows and the integer structure of the design). From a formula and a data
   frame, :mod:`jaxmixed.design` builds it (``build_design`` then ``prepare``;
   the old names ``jaxmixed.core.build_design`` and the like still resolve, with
   a ``DeprecationWarning``).
2. ``design_statistics(data)`` → :class:`DesignStatistics` (built once per
   design) and ``response_statistics(design, y)`` → :class:`ResponseStatistics`
   (linear in y: differentiate with respect to y, vmap over many responses);
   ``model_statistics(data, y)`` does both.
3. ``objective(phi, stats, reml)``: lme4's profiled criterion at φ;
   ``solve(phi, stats, reml)``: β̃, σ̂, b̃ there (standardised units).
4. ``fit(stats, FitOptions(...))`` → :class:`FitResult`: optimisation,
   boundary check and the map back to the user's units, in one jittable,
   vmappable, differentiable function (gradients through the optimum by
   implicit differentiation); ``fit_data(data, y, options)`` = 2 + 4.
5. Solvers as Modules (``_solvers``): ``LBFGS(...)`` (the default),
   ``OptaxSolver(optax_transformation)``; ``minimize(fun, x0, solver)`` runs
   one on any scalar function. ``FitOptions(reml, solver, boundary=
   BoundaryTrials(screen, tol), start)`` holds a fit's settings; ``RESULTS``
   says why a loop stopped and ``is_converged`` is the one test of success.
   Inference (``_inference``): ``satterthwaite(stats, phi, free, reml, L)``,
   the variances and Satterthwaite df of contrasts of β̂ from the exact
   Hessian of the deviance in (θ, σ).
6. Network fixed parts (``_mixed_loss``): ``joint_loss(model, phi, data)``,
   lme4's criterion of ``y − f(x)`` for a network ``f`` (:class:`NeuralData`:
   features, response, design statistics of ``X = [1]``); ``group_loss``,
   the unprofiled deviance of a minibatch of whole groups (``group_layout``);
   ``fit_at(stats, phi)``: the :class:`FitResult` at trained parameters.

7. Many fits (``_many``): ``fit_responses(design, ys, options)``, one vmapped
   fit per response over shared design statistics; ``stack_data`` and
   ``fit_stacked`` for data sets of one model padded to common sizes
   (``pad_data``: rows, levels and cross entries that add nothing).
8. Simulation (``_simulate``): ``simulate(key, data, result, n)`` draws
   responses from a fitted model (draw k from ``fold_in(key, k)``).
9. Generalized linear mixed models: families and links (``Binomial(link)``,
   ``Poisson()``; ``_family``); ``laplace_deviance(theta, beta, data, y, family)``,
   lme4's Laplace deviance by PIRLS in the same blocked factor (any random
   part; exact gradients and Hessians by Newton steps at the modes;
   ``_laplace``), ``mode_covariances`` (lme4's condVar); ``agq_deviance(...,
   n_nodes)``, adaptive Gauss–Hermite quadrature for one scalar random effect
   (``_agq``); ``fit_glmm_data(data, y, family, nagq=1)`` → :class:`GLMMResult`,
   the fit over (θ, β), differentiable through the optimum, and
   ``fit_glmm_responses(data, ys, family)``, many responses vmapped (``_glmm``).

Covariance parameterisation: ``CovarianceStructure`` (which entries of a
factor's Λ are free; ``structure_for_terms`` builds one from the sizes of a
factor's terms), ``lambda_from_phi``, ``theta_from_phi``, ``phi_from_theta``.

Call these inside ``with jax.enable_x64(True):`` for float64 (``fit_reml``
does so itself).
"""

from ._agq import agq_deviance
from ._covariance import (
    CovarianceStructure,
    lambda_from_phi,
    phi_from_theta,
    structure_for_terms,
    theta_from_phi,
)
from ._family import Binomial, Family, Poisson
from ._fit import FitResult, fit, fit_at, fit_data
from ._glmm import GLMMResult, fit_glmm_data, fit_glmm_responses
from ._index import DenseIndex, DesignIndex
from ._inference import SatterthwaiteResult, satterthwaite
from ._laplace import LaplaceDeviance, laplace_deviance, mode_covariances
from ._many import fit_responses, fit_stacked
from ._mixed_loss import (
    GroupLayout,
    NeuralData,
    group_layout,
    group_loss,
    joint_loss,
    joint_statistics,
    network_output,
)
from ._objective import Solution, objective, solve, standard_criterion
from ._options import BoundaryTrials, FitOptions
from ._padding import pad_data, stack_data
from ._simulate import factor_codes, simulate, simulate_one
from ._solvers import LBFGS, AbstractSolver, OptaxSolver, OptimizeResult, minimize
from ._statistics import (
    DesignStatistics,
    ModelData,
    ModelStatistics,
    ResponseStatistics,
    Standardization,
    design_statistics,
    model_data,
    model_statistics,
    response_statistics,
)
from ._status import RESULTS, is_converged

__all__ = [
    "Binomial",
    "Family",
    "GLMMResult",
    "LaplaceDeviance",
    "Poisson",
    "agq_deviance",
    "fit_glmm_data",
    "fit_glmm_responses",
    "laplace_deviance",
    "mode_covariances",
    "stack_data",
    "simulate_one",
    "simulate",
    "pad_data",
    "fit_stacked",
    "fit_responses",
    "factor_codes",
    "RESULTS",
    "SatterthwaiteResult",
    "satterthwaite",
    "AbstractSolver",
    "BoundaryTrials",
    "LBFGS",
    "OptaxSolver",
    "is_converged",
    "CovarianceStructure",
    "DenseIndex",
    "DesignIndex",
    "DesignStatistics",
    "FitOptions",
    "FitResult",
    "GroupLayout",
    "ModelData",
    "ModelStatistics",
    "NeuralData",
    "OptimizeResult",
    "ResponseStatistics",
    "Solution",
    "Standardization",
    "design_statistics",
    "fit",
    "fit_at",
    "fit_data",
    "group_layout",
    "group_loss",
    "joint_loss",
    "joint_statistics",
    "network_output",
    "lambda_from_phi",
    "minimize",
    "model_data",
    "model_statistics",
    "objective",
    "phi_from_theta",
    "response_statistics",
    "solve",
    "standard_criterion",
    "structure_for_terms",
    "theta_from_phi",
]


# The host design step moved to :mod:`jaxmixed.design` (it needs pandas and
# formulaic, which this layer never imports). The old names still resolve here,
# lazily, so that importing the pure layer does not import the host layer.
_MOVED_TO_DESIGN = frozenset(
    {
        "Design",
        "ModelArrays",
        "ParsedFormula",
        "RandomTerm",
        "build_design",
        "design_from_arrays",
        "parse_formula",
        "prepare",
    }
)


def __getattr__(name: str):
    if name in _MOVED_TO_DESIGN:
        import importlib
        import warnings

        warnings.warn(
            f"jaxmixed.core.{name} moved to jaxmixed.design.{name} (the pure layer never imports "
            "pandas or formulaic); the old name will be removed in a future release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("jaxmixed.design"), name)
    raise AttributeError(f"module 'jaxmixed.core' has no attribute {name!r}")

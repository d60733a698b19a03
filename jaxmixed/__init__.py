"""jaxmixed: linear mixed-effects models in JAX, with lme4's answers."""

from ._api import ConvergenceWarning, fit_reml, model_statistics
from ._covariance import CovarianceStructure, lambda_from_phi, phi_from_theta, theta_from_phi
from ._datasets import list_datasets, load_dataset
from ._design import Design, ModelArrays, build_design, design_from_arrays
from ._fit import OptimizeResult, fit_statistics, minimize
from ._formula import FormulaError, ParsedFormula, RandomTerm, parse_formula
from ._objective import ModelStatistics, compute_statistics, objective, solve_mixed_model
from ._results import MixedModelResults

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "CovarianceStructure",
    "Design",
    "FormulaError",
    "MixedModelResults",
    "ModelArrays",
    "ModelStatistics",
    "OptimizeResult",
    "ParsedFormula",
    "RandomTerm",
    "build_design",
    "compute_statistics",
    "design_from_arrays",
    "fit_reml",
    "fit_statistics",
    "lambda_from_phi",
    "list_datasets",
    "load_dataset",
    "minimize",
    "model_statistics",
    "objective",
    "parse_formula",
    "phi_from_theta",
    "solve_mixed_model",
    "theta_from_phi",
]

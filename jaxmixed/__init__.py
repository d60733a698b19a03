"""jaxmixed: linear mixed-effects models in JAX, with lme4's answers.

The user level is re-exported here: :func:`fit_reml` and its
:class:`MixedModelResults`, the datasets, the errors and warnings, the status
enumeration :class:`RESULTS` and the :class:`FitOptions`. The pure layer that
the next capabilities build on (statistics, objective, the pure fit and its
result, the covariance parameterisation) lives in :mod:`jaxmixed.core`.
"""

from . import core
from ._api import ConvergenceWarning, fit_reml
from ._datasets import list_datasets, load_dataset
from ._formula import FormulaError
from ._optimise import RESULTS, FitOptions
from ._results import MixedModelResults

__version__ = "0.2.0"

__all__ = [
    "RESULTS",
    "ConvergenceWarning",
    "FitOptions",
    "FormulaError",
    "MixedModelResults",
    "core",
    "fit_reml",
    "list_datasets",
    "load_dataset",
]

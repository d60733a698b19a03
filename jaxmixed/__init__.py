"""jaxmixed: linear mixed-effects models in JAX, with lme4's answers.

The user level is re-exported here: :func:`fit_reml` and its
:class:`MixedModelResults`, the datasets, the errors and warnings, the status
enumeration :class:`RESULTS` and the :class:`FitOptions`; and the mixed
models with a learned fixed part: :func:`fit_mixed_nn` (an equinox network,
trained jointly or by EM), :func:`fit_mixed_em` (EM around any regressor),
their :class:`MixedNNResults` and :class:`TrainOptions`; many fits as one
computation: :func:`fit_reml_many` (many responses over one design) and
:func:`fit_reml_stacked` (many data sets of one model), returning a
:class:`FitTable`, the :class:`BootstrapResults` of
``MixedModelResults.bootstrap`` and the :class:`PowerResult` and
:class:`PowerCurve` of ``MixedModelResults.power``. Compiled code: one program per model
structure, at most :func:`set_max_compiled_programs` kept, and a disk cache
(:func:`set_compilation_cache`, :func:`compilation_cache_dir`). The pure layer that
the next capabilities build on (statistics, objective, the pure fit and its
result, the covariance parameterisation) lives in :mod:`jaxmixed.core`.

Nothing heavy is imported with the package: each name below is imported on
first use (PEP 562), so ``import jaxmixed`` costs milliseconds and pandas,
formulaic, JAX and the rest load with the first function called.
"""

import importlib
from typing import TYPE_CHECKING, Any

# Each public name, the module it lives in (a package itself for ``core`` and ``design``).
_LAZY = {
    "core": ".core",
    "design": ".design",
    "linear": ".linear",
    "glmm": ".glmm",
    "networks": ".networks",
    "sklearn": ".sklearn",
    "list_datasets": "._datasets",
    "load_dataset": "._datasets",
    "mixedml_simulation": "._datasets",
    "clear_compiled_programs": ".core._compile",
    "compilation_cache_dir": ".core._compile",
    "n_compiled_programs": ".core._compile",
    "set_compilation_cache": ".core._compile",
    "set_compile_notice": ".core._compile",
    "set_max_compiled_programs": ".core._compile",
    "Binomial": ".core._family",
    "Poisson": ".core._family",
    "BoundaryTrials": ".core._options",
    "FitOptions": ".core._options",
    "LBFGS": ".core._solvers",
    "OptaxSolver": ".core._solvers",
    "RESULTS": ".core._status",
    "FormulaError": ".design._formula",
    "fit_glmm": ".glmm._api",
    "fit_glmm_many": ".glmm._many_api",
    "GLMMTable": ".glmm._many_api",
    "GLMMResults": ".glmm._results",
    "anova": ".linear._anova",
    "ConvergenceWarning": ".linear._api",
    "fit_reml": ".linear._api",
    "BootstrapResults": ".linear._bootstrap",
    "fit_reml_many": ".linear._many_api",
    "PowerCurve": ".linear._power",
    "PowerResult": ".linear._power",
    "MixedModelResults": ".linear._results",
    "fit_reml_stacked": ".linear._stacked",
    "FitTable": ".linear._table",
    "fit_mixed_em": ".networks._api",
    "fit_mixed_nn": ".networks._api",
    "TrainOptions": ".networks._options",
    "FixedPart": ".networks._results",
    "MixedNNResults": ".networks._results",
}

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from . import core, design, glmm
    from ._datasets import list_datasets, load_dataset, mixedml_simulation
    from .core._compile import (
        clear_compiled_programs,
        compilation_cache_dir,
        n_compiled_programs,
        set_compilation_cache,
        set_compile_notice,
        set_max_compiled_programs,
    )
    from .core._family import Binomial, Poisson
    from .core._options import BoundaryTrials, FitOptions
    from .core._solvers import LBFGS, OptaxSolver
    from .core._status import RESULTS
    from .design._formula import FormulaError
    from .glmm._api import fit_glmm
    from .glmm._many_api import GLMMTable, fit_glmm_many
    from .glmm._results import GLMMResults
    from .linear._anova import anova
    from .linear._api import ConvergenceWarning, fit_reml
    from .linear._bootstrap import BootstrapResults
    from .linear._many_api import fit_reml_many
    from .linear._power import PowerCurve, PowerResult
    from .linear._results import MixedModelResults
    from .linear._stacked import fit_reml_stacked
    from .linear._table import FitTable
    from .networks._api import fit_mixed_em, fit_mixed_nn
    from .networks._options import TrainOptions
    from .networks._results import FixedPart, MixedNNResults


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use (PEP 562) and keeps the name."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'jaxmixed' has no attribute {name!r}")
    module = importlib.import_module(where, __name__)
    value = module if where == f".{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.12.0"

__all__ = [
    "anova",
    "Binomial",
    "fit_glmm",
    "fit_glmm_many",
    "GLMMTable",
    "GLMMResults",
    "glmm",
    "Poisson",
    "BootstrapResults",
    "PowerCurve",
    "PowerResult",
    "FitTable",
    "fit_reml_many",
    "fit_reml_stacked",
    "RESULTS",
    "ConvergenceWarning",
    "FitOptions",
    "BoundaryTrials",
    "LBFGS",
    "OptaxSolver",
    "FixedPart",
    "FormulaError",
    "MixedModelResults",
    "MixedNNResults",
    "TrainOptions",
    "core",
    "design",
    "fit_mixed_em",
    "fit_mixed_nn",
    "fit_reml",
    "clear_compiled_programs",
    "compilation_cache_dir",
    "n_compiled_programs",
    "set_compilation_cache",
    "set_compile_notice",
    "set_max_compiled_programs",
    "list_datasets",
    "load_dataset",
    "mixedml_simulation",
]

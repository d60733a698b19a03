"""Generalized linear mixed models at the user level (``jaxmixed.fit_glmm``)."""

from ._api import fit_glmm
from ._many_api import GLMMTable, fit_glmm_many
from ._results import GLMMResults
from ._separation import SeparationWarning

__all__ = ["GLMMResults", "GLMMTable", "SeparationWarning", "fit_glmm", "fit_glmm_many"]

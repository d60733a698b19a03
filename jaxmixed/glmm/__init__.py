"""Generalized linear mixed models at the user level (``jaxmixed.fit_glmm``)."""

from ._api import fit_glmm
from ._results import GLMMResults

__all__ = ["GLMMResults", "fit_glmm"]

"""scikit-learn, the optional dependency: every name the estimators use, imported here once.

Importing :mod:`jaxmixed.sklearn` without scikit-learn (or with one older
than 1.6, which lacks ``validate_data`` and ``__sklearn_tags__``) raises an
ImportError that says how to install it. The other modules of the package
import scikit-learn's names from here, so that this message is what users see.
"""

from __future__ import annotations

try:
    from sklearn.base import BaseEstimator, RegressorMixin, clone
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold, KFold
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_array, check_is_fitted, check_X_y, validate_data
except ImportError as err:  # absent, or older than 1.6 (validate_data, __sklearn_tags__)
    raise ImportError(
        "jaxmixed.sklearn needs scikit-learn>=1.6: pip install jaxmixed[sklearn] "
        "(or pip install 'scikit-learn>=1.6')"
    ) from err


__all__ = [
    "BaseEstimator",
    "GroupKFold",
    "KFold",
    "LinearRegression",
    "OneHotEncoder",
    "RegressorMixin",
    "check_X_y",
    "check_array",
    "check_is_fitted",
    "check_random_state",
    "clone",
    "r2_score",
    "validate_data",
]

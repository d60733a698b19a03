"""Where a warning should point: the first frame outside jaxmixed.

Every warning the library issues names the user's line, however deep the
library's own calls run (an entry point, the design layer, a results method,
a scikit-learn estimator): ``warnings.warn(..., stacklevel=user_stacklevel())``.
Counting frames by hand breaks whenever a call moves between modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["user_stacklevel"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` in the function that calls this one:
    the first frame whose file lies outside the jaxmixed package."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level

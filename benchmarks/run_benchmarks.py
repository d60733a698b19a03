#!/usr/bin/env python
"""Benchmarks of jaxmixed: the same as ``python -m benchmarks`` (see benchmarks/cli.py, benchmarks/README.md).

    .venv/bin/python benchmarks/run_benchmarks.py                 # the peer comparison
    .venv/bin/python benchmarks/run_benchmarks.py --quick --cases a --no-plot
    .venv/bin/python benchmarks/run_benchmarks.py --suite quick
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # As a script, Python puts benchmarks/ first on sys.path; the package lives one level up.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.cli import main

    sys.exit(main())

"""The many-fits benchmark (``benchmarks/many_benchmark.py``), one module per case.

- ``common``: sizes, worker processes, lme4 through ``many_benchmark.R``, report lines.
- ``w4``, ``genomics``, ``bootstrap``, ``bigrows``: each case's data, its workers
  (what a fresh process measures) and its section of ``results/many.md``.
- ``cli``: the command line and the sections file.
"""

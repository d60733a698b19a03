"""Benchmarks of jaxmixed: a package run from the repository root.

    python -m benchmarks                  # the peer comparison (jaxmixed, statsmodels, lme4)
    python -m benchmarks --suite quick    # the library's own kernels, against the previous run
    python -m benchmarks --suite real     # mlmRev's models, jaxmixed against lme4

``benchmarks/run_benchmarks.py`` is the same command as a script. The modules:

- ``_common``: the helpers every suite shares (progress, timing, peak memory,
  the idle check, results files, tables).
- ``cases``: the peer comparison's cases and the data they fit.
- ``measure``: subprocesses with per-process peak memory.
- ``workers``: what a subprocess runs for each tool (jaxmixed, statsmodels).
- ``lme4``: lme4 through ``Rscript lme4.R``.
- ``peers``, ``report``, ``plot``: the peer comparison, its tables and scaling plot.
- ``quick``: the quick regression suite; ``real``, ``real_report``: the real-models suite.
- ``cli``: the command line.
- ``many``: the many-fits benchmark (``benchmarks/many_benchmark.py``), one module per case.

See benchmarks/README.md.
"""

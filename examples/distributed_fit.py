"""Fits over several processes (and hosts) with ``jax.distributed``.

Run on one machine::

    python examples/distributed_fit.py

starts two worker processes of this script on localhost, each with two CPU
devices. Each worker calls ``jax.distributed.initialize`` and then, with
``devices=jax.devices()`` (every process's devices: four here), fits
sleepstudy's ``Reaction ~ Days + (Days | Subject)`` and a ``fit_reml_many``
over 64 simulated responses; process 0 prints the summary and the
comparison with a one-process fit, which it makes itself.

Nothing here is home-made cluster code: ``jax.distributed`` connects the
processes, jaxmixed places the rows (and responses) with
``jax.sharding.NamedSharding`` over the global device list, and XLA inserts
the cross-device (and cross-process) sums into the compiled fit. Every
process runs the same program on the same data: each one reads the whole data
set and keeps only the rows its own devices hold.

Several hosts. Start the same worker once per process, on every host, with the
data set available everywhere::

    # host A (process 0, also the coordinator), host B (process 1):
    python examples/distributed_fit.py --worker --coordinator hostA:12345 \\
        --num-processes 2 --process-id 0
    python examples/distributed_fit.py --worker --coordinator hostA:12345 \\
        --num-processes 2 --process-id 1

- ``--coordinator``: ``host:port`` of process 0, reachable from every host
  (process 0 listens on that port). Instead of the argument, JAX reads the
  environment variable ``JAX_COORDINATOR_ADDRESS``.
- ``--num-processes`` and ``--process-id`` (0 … N−1, 0 on the coordinator's
  host). Under SLURM or Open MPI (``srun``, ``mpirun``) leave out all three:
  ``jax.distributed.initialize()`` reads them from the cluster's environment.
- The devices: a GPU host gives its GPUs; on CPUs set
  ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` for K devices per
  process (``JAX_PLATFORMS=cpu`` to use the CPUs only).

``jax.distributed.initialize`` must run before any other use of JAX (even
``jax.devices()``); the worker below imports jaxmixed only afterwards. If a
process dies, the others wait for it until JAX's timeouts, so a launcher should
watch its workers and stop the rest (as :func:`launch_local` does).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

FORMULA = "Reaction ~ Days + (Days | Subject)"
N_RESPONSES = 64


def simulated_responses(df, k: int = N_RESPONSES, seed: int = 0):
    """(n, k) responses over sleepstudy's design: reaction times plus noise."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    return df["Reaction"].to_numpy()[:, None] + rng.normal(scale=25.0, size=(len(df), k))


def worker(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """One process of the distributed run: connect, fit, and (process 0) report."""
    import jax  # noqa: PLC0415 - nothing of JAX may run before initialize

    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    import jaxmixed as jm  # noqa: PLC0415

    me = jax.process_index()
    df = jm.load_dataset("sleepstudy")
    ys = simulated_responses(df)
    devices = jax.devices()  # every process's devices, not only this one's (jax.local_devices())

    start = time.perf_counter()
    fit = jm.fit_reml(FORMULA, df, devices=devices)
    table = jm.fit_reml_many(FORMULA, df, responses=ys, devices=devices, verbose=False)
    elapsed = time.perf_counter() - start
    if me != 0:  # every process holds the same results; one reports them
        jax.distributed.shutdown()
        return

    print(
        f"process 0 of {jax.process_count()}: {jax.device_count()} devices in all, "
        f"{jax.local_device_count()} here; the two fits took {elapsed:.1f} s (with compilation)\n"
    )
    print(fit.summary())
    local = jm.fit_reml(FORMULA, df)  # one process, one device
    local_table = jm.fit_reml_many(FORMULA, df, responses=ys, verbose=False)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))  # noqa: E731
    numeric = [c for c in local_table.columns if c not in ("message", "converged", "singular", "n_iter")]
    comparison = pd.Series(
        {
            "objective": rel(fit.objective, local.objective),
            "fixed effects": rel(fit.fixed_effects, local.fixed_effects),
            "theta": rel(fit.theta, local.theta),
            "sigma": rel(fit.sigma, local.sigma),
            f"fit_reml_many ({N_RESPONSES} responses)": rel(table[numeric], local_table[numeric]),
        },
        name="largest relative difference",
    )
    print("\nDistributed against one-process fits:")
    print(comparison.to_string(float_format="{:.1e}".format))
    print(f"fit_reml_many: {int(table['converged'].sum())} of {len(table)} fits converged")
    jax.distributed.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(num_processes: int = 2, local_devices: int = 2, timeout: float = 600.0) -> int:
    """Starts ``num_processes`` workers of this script on localhost and waits for them.

    Each gets ``local_devices`` CPU devices. A worker that fails stops the
    others (they would wait for it); so does the ``timeout``. Returns 0 when
    every worker succeeded.
    """
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={local_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--coordinator", coordinator]
            + ["--num-processes", str(num_processes), "--process-id", str(i)],
            env=env,
            # the workers' output: process 0's report; the gloo library's "[Gloo] Rank ..."
            # connection lines of the others are dropped
            stdout=None if i == 0 else subprocess.DEVNULL,
        )
        for i in range(num_processes)
    ]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if all(c == 0 for c in codes) or any(c not in (0, None) for c in codes):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if codes != [0] * num_processes:
        print(f"workers failed or timed out: exit codes {codes}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help="run one worker (default: launch two locally)")
    parser.add_argument("--coordinator", help="host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.coordinator, args.num_processes, args.process_id)
        return 0
    return launch_local()


if __name__ == "__main__":
    sys.exit(main())

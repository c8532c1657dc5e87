"""Where Dask work runs: `local` (a LocalCluster on this machine) or a running scheduler's address.

The same call serves both, so a command that ran on a laptop's LocalCluster runs on a real cluster
given `tcp://HOST:8786` with no change. Local workers are processes with one thread each
(LightGBM's network and numba's kernels want a process of their own), the scheduler's HTTP
endpoint on a free port (no fixed port to collide with on a shared machine), their scratch
space in a temporary directory, and glibc's default malloc trimming: Dask's nannies set
MALLOC_TRIM_THRESHOLD_=65536 so that workers hand freed memory back at once, which made the
flow pipeline's many short-lived arrays 30% slower per capture (505k against 721k packets/s on
one worker); the large arrays (the training matrix) are mmapped and go back to the system anyway.
"""
from __future__ import annotations

import contextlib
import os
import tempfile


def _workers(client) -> dict:
    return client.scheduler_info(n_workers=-1)["workers"]


def describe(client) -> dict:
    """What the model card and the benchmark record about the cluster."""
    workers = _workers(client)
    return {"scheduler": client.scheduler.address, "workers": len(workers),
            "threads": sum(w.get("nthreads", 1) for w in workers.values()),
            "memory_limit_bytes": sum(int(w.get("memory_limit") or 0) for w in workers.values())}


@contextlib.contextmanager
def connect(spec: str, workers: int | None = None, memory_limit: str | int = "auto", timeout: float = 15.0):
    """A distributed Client on `spec`: "local" starts a LocalCluster of `workers` processes (one per
    core by default) for the duration; anything else is a scheduler address to connect to."""
    import dask
    from distributed import Client, LocalCluster
    if not spec:
        raise ValueError("--dask needs `local` or a scheduler address (tcp://HOST:8786)")
    if spec == "local":
        n = workers or os.cpu_count() or 1
        if n < 1:
            raise ValueError(f"--workers must be at least 1 (got {workers})")
        with tempfile.TemporaryDirectory(prefix="iadm-dask-") as scratch, \
                dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                             memory_limit=memory_limit, local_directory=scratch, silence_logs=40) as cluster, \
                Client(cluster) as client:
            yield client
        return
    if workers:
        raise ValueError("--workers sizes a local cluster; a scheduler at an address has the workers it has")
    address = spec if "://" in spec else f"tcp://{spec}"
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"--dask {spec}: no Dask scheduler answered at {address}: {exc}") from None
    try:
        if not _workers(client):
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise ValueError(f"--dask {spec}: the scheduler has no workers (waited {timeout:g} s)") from None
        yield client
    finally:
        client.close()

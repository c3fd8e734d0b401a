"""What `--ray` does for `ponder sweep` and `ponder serve`: connect, start K replicas, tear them down after.

    with ray_replicas("smollm2-135m", RayOptions(replicas=2)) as backend:    # the embedded local Ray instance
        await run_sweep(config, backend, store, RayExecutor(backend.pool, concurrency=4))
    with ray_replicas("http://gpu-node:8000/v1#Qwen/Qwen2.5-7B-Instruct", RayOptions("auto", 8)) as backend: ...

A local model's replica gets `n_threads` CPU threads (default: this machine's cores shared out) and reserves as
many Ray CPUs, so Ray places replicas where there are cores for them; an HTTP or scripted replica reserves none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ponder.distributed.actors import BackendSpec
from ponder.distributed.replicas import RayReplicaBackend, ReplicaPool
from ponder.distributed.runtime import connect


def is_local(spec: str) -> bool:
    """True for a model run on llama.cpp inside the replica (not an HTTP client, not the scripted fake)."""
    return spec != "scripted" and not spec.startswith(("http://", "https://"))


def replica_spec(spec: str, replicas: int, n_threads: int | None = None, **options: Any) -> tuple[BackendSpec, float]:
    """The BackendSpec each replica opens, and the Ray CPUs each reserves."""
    options = {k: v for k, v in options.items() if v is not None}
    if not is_local(spec):
        return BackendSpec.of(spec, **options), 0.0
    threads = n_threads or max(1, (os.cpu_count() or 1) // replicas)
    return BackendSpec.of(spec, n_threads=threads, **options), float(threads)


@dataclass(frozen=True)
class RayOptions:
    """How `--ray` runs: where Ray is, and how many replicas of the model to start."""

    address: str | None = None
    """An existing cluster ("auto", "ray://head:10001"); None: start the embedded local instance."""
    replicas: int = 2
    """Actors, each holding one backend replica."""
    num_gpus: float = 0.0
    """GPUs each replica reserves (a local model on a GPU node; 0 for HTTP clients and CPU models)."""


def open_ray_backend(spec: str | BackendSpec, ray: RayOptions, n_threads: int | None = None,
                     **options: Any) -> RayReplicaBackend:
    """K replicas of `spec` on Ray actors, seen as one Backend; its `close()` ends them and the Ray connection.

    With no address a local Ray instance is started with enough CPUs for the replicas; with one, the cluster is
    joined. `options` go to each replica's backend constructor. The backend's `.pool` feeds a RayExecutor.
    """
    if isinstance(spec, BackendSpec):
        backend_spec, cpus = spec, 0.0
    else:
        backend_spec, cpus = replica_spec(spec, ray.replicas, n_threads, **options)
    local_cpus = max(os.cpu_count() or 1, math.ceil(ray.replicas * cpus))
    session = connect(ray.address, num_cpus=None if ray.address else local_cpus)
    try:
        pool = ReplicaPool(backend_spec, ray.replicas, num_cpus=cpus, num_gpus=ray.num_gpus)
    except BaseException:
        session.close()
        raise
    return RayReplicaBackend(pool, session)


@contextmanager
def ray_replicas(spec: str | BackendSpec, ray: RayOptions | None = None, n_threads: int | None = None,
                 **options: Any) -> Iterator[RayReplicaBackend]:
    """`open_ray_backend` as a context manager."""
    backend = open_ray_backend(spec, ray or RayOptions(), n_threads, **options)
    try:
        yield backend
    finally:
        backend.close()

"""ponder on Ray: the same sweep fanned out over actors, and server replicas (extra `ray`).

    runtime.py    connect(address) -> RaySession: the embedded local instance, or an existing cluster
    actors.py     BackendSpec (how a replica is opened) and Replica (the actor holding one backend)
    replicas.py   ReplicaPool (K actors, liveness, load) and RayReplicaBackend (least-loaded routing)
    executor.py   RayExecutor: the sweep's Executor on a ReplicaPool, rescheduling a dead actor's units

Importing this package does not import ray; creating a pool does (MissingExtra names `pip install 'ponder[ray]'`).
"""

from ponder.distributed.actors import BackendSpec
from ponder.distributed.executor import RayExecutor
from ponder.distributed.replicas import RayReplicaBackend, ReplicaPool
from ponder.distributed.runtime import RaySession, connect

__all__ = ["BackendSpec", "RayExecutor", "RayReplicaBackend", "RaySession", "ReplicaPool", "connect"]

"""Joining Ray: start the embedded local instance, or connect to an existing cluster. Nothing else.

ponder never builds a cluster of its own: with no address it starts Ray's local instance (one machine, as on a
laptop); with an address ("auto", "ray://head:10001", "10.0.0.1:6379") it joins a cluster someone started with
`ray start`. Whoever connected disconnects: `RaySession.close()` stops a local instance it started; a joined
cluster keeps running.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ponder.extras import require


@functools.cache
def code_digest() -> str:
    """ponder's version and a digest of its source files, as this process first saw them.

    The driver and every replica must run the same ponder: a replica that extracts answers with other code
    stores other rows. The driver computes this when ponder.distributed is imported; a replica when it starts.
    """
    import ponder

    root = Path(ponder.__file__).parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return f"{ponder.__version__}+{digest.hexdigest()[:12]}"


def ray_module() -> ModuleType:
    """`import ray`, or MissingExtra naming `pip install 'ponder[ray]'`."""
    return require("ray", "ray")


@dataclass
class RaySession:
    """A connection to Ray made by `connect`."""

    address: str | None
    """The cluster joined; None: the local instance."""
    owned: bool
    """True when `connect` called ray.init (so close() disconnects; a local instance it started stops)."""

    def close(self) -> None:
        """Disconnect if this session connected. A joined cluster keeps running; a local instance stops."""
        ray = ray_module()
        if self.owned and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: str | None = None, num_cpus: int | None = None) -> RaySession:
    """Join the cluster at `address`, or start a quiet local instance with `num_cpus` CPUs (default: all).

    If this process is already connected, that connection is reused (and left running on close).
    """
    ray = ray_module()
    if ray.is_initialized():
        return RaySession(address, owned=False)
    # Quiet and quick: no dashboard, no usage-stats prompt, worker logs stay in Ray's log folder.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False,
             "configure_logging": True}
    if address:
        ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        return RaySession(address, owned=True)
    # Ray starts workers at niceness 15. Here the actors do the sweep's work, and the in-process executor runs at
    # niceness 0; at 15 a shared machine's other jobs would take the actors' CPU. A joined cluster keeps its setting.
    # address="local": always a new embedded instance, never a cluster `ray start` left running on this machine.
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, _system_config={"worker_niceness": 0},
             **quiet)
    return RaySession(None, owned=True)

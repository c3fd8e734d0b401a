"""Per-run cgroups for the sandbox: a run's memory and process count are capped as a whole, not per process.

What the kernel offers is detected once (`detect`):
- cgroup v2, when the unified hierarchy lets our own group's children have the memory controller (its
  `cgroup.subtree_control` has it, or we may enable it: the kernel allows that only in a group that holds no
  process of its own, or at the root);
- else cgroup v1, when a memory hierarchy is mounted and we may make groups in it (root, usually);
- else none: the sandbox keeps only its per-process rlimits, and its results say so.
`PONDER_SANDBOX_CGROUP` names another parent folder instead of our own group (e.g. a systemd `Delegate=yes`
group prepared for it). Each run gets a fresh group below that parent, so whatever limits the parent has still
hold. The sandbox's bootstrap joins the group before the program starts; on exit everything in it is killed and
the group removed. Groups left by a ponder process that died mid-run are removed when the next one detects.
This module only manages the folders and what is in them; the sandbox starts the processes.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import secrets
import select
import signal
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

PARENT_ENV = "PONDER_SANDBOX_CGROUP"
_PREFIX = "ponder-sandbox-"
_KILL_WAIT_S = 2.0
"""How long kill() and remove() keep trying: SIGKILLed processes leave their group within milliseconds."""


class MemoryCap(enum.StrEnum):
    """How a sandbox run's memory is capped."""

    CGROUP_V2 = "cgroup-v2"
    """The whole run, in a cgroup v2 group (memory.max, no swap, pids.max)."""
    CGROUP_V1 = "cgroup-v1"
    """The whole run, in cgroup v1 memory (and pids) groups."""
    RLIMIT = "rlimit"
    """Each process only (RLIMIT_AS): with the process cap the run may use up to nproc x memory_mb."""


@dataclass(frozen=True)
class Hierarchy:
    """Where per-run groups are made."""

    cap: MemoryCap
    memory: str
    """The parent folder of each run's group (v2: of its only group)."""
    pids: str | None = None
    """cgroup v1 only: the parent folder in the pids hierarchy, where one is mounted."""


@dataclass(frozen=True)
class RunGroup:
    """One run's group: one folder in v2; a memory folder and maybe a pids folder in v1."""

    cap: MemoryCap
    memory: str
    pids: str | None = None

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes "0" to, to join the group."""
        return [os.path.join(d, "cgroup.procs") for d in (self.memory, self.pids) if d]

    def kill(self) -> None:
        """SIGKILL every process in the group and wait until each has exited, not only left the group's list: a
        namespace's init leaves the list as it starts exiting, then waits there for the others to die."""
        held: dict[int, int | None] = {}  # pid -> a pidfd on it, so no signal reaches a reused pid
        deadline = time.monotonic() + _KILL_WAIT_S
        first = True
        try:
            while True:
                pids = self.pids_alive()
                for pid in pids:
                    if pid not in held:
                        held[pid] = _pidfd(pid)  # before any kill: dying processes soon leave the list
                if first and self.cap is MemoryCap.CGROUP_V2:  # the kernel kills them all, forks in progress too
                    _write_if_present(self.memory, "cgroup.kill", "1")
                first = False
                for pid in pids:
                    _sigkill(pid, held[pid])
                if not pids or time.monotonic() > deadline:
                    break
                time.sleep(0.002)  # a forking program may race one pass
            for fd in held.values():
                if fd is not None:
                    _exited(fd, deadline)
        finally:
            for fd in held.values():
                if fd is not None:
                    os.close(fd)

    def pids_alive(self) -> list[int]:
        with contextlib.suppress(OSError), open(os.path.join(self.memory, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
        return []

    def peak_mb(self) -> float | None:
        """The group's peak memory (all its processes together, page cache and tmpfs included), in MiB."""
        name = "memory.peak" if self.cap is MemoryCap.CGROUP_V2 else "memory.max_usage_in_bytes"
        value = _read(self.memory, name)
        return int(value) / (1 << 20) if value and value.strip().isdigit() else None

    def oom_killed(self) -> int:
        """Processes the kernel killed for exceeding the group's memory."""
        name = "memory.events" if self.cap is MemoryCap.CGROUP_V2 else "memory.oom_control"
        for line in (_read(self.memory, name) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self) -> None:
        for d in (self.memory, self.pids):
            if d:
                _rmdir(d)


def create(hierarchy: Hierarchy, memory_mb: int, max_pids: int) -> RunGroup:
    """A fresh group for one run, with its limits set; raises OSError when the kernel refuses."""
    # whose it is, so that a later process can tell a group left by one that died mid-run
    name = f"{_PREFIX}{_pid_namespace()}-{os.getpid()}-{secrets.token_hex(6)}"
    memory = os.path.join(hierarchy.memory, name)
    pids = os.path.join(hierarchy.pids, name) if hierarchy.pids else None
    os.mkdir(memory)
    group = RunGroup(hierarchy.cap, memory, None)
    try:
        limit = str(memory_mb << 20)
        if hierarchy.cap is MemoryCap.CGROUP_V2:
            _write(memory, "memory.max", limit)
            _write_if_present(memory, "memory.swap.max", "0")  # swap would let the run hold more than its cap
            _write_if_present(memory, "pids.max", str(max_pids))
            return group
        _write(memory, "memory.limit_in_bytes", limit)
        _write_if_present(memory, "memory.memsw.limit_in_bytes", limit)  # memory + swap: so no swap at all
        if pids:
            os.mkdir(pids)
            group = RunGroup(hierarchy.cap, memory, pids)
            _write(pids, "pids.max", str(max_pids))
        return group
    except OSError:
        group.remove()
        raise


def detect() -> Hierarchy | None:
    """The hierarchy to make run groups in, or None (logged, with the reason) when none is usable."""
    if os.name != "posix" or not os.path.exists("/proc/self/cgroup"):
        return None
    mounts, ours = _mounts(), _our_groups()
    override = os.environ.get(PARENT_ENV)
    v2 = next((m for m in mounts if m[2] == "cgroup2"), None)
    v1_memory = next((m for m in mounts if m[2] == "cgroup" and "memory" in m[3]), None)
    v1_pids = next((m for m in mounts if m[2] == "cgroup" and "pids" in m[3]), None)
    reasons = []
    if v2 is not None:
        parent = override or _our_folder(v2, ours.get(""))
        why = _v2_usable(parent)
        if why is None:
            return _swept(Hierarchy(MemoryCap.CGROUP_V2, parent))
        reasons.append(f"cgroup v2 at {parent}: {why}")
    if v1_memory is not None:
        parent = override or _our_folder(v1_memory, ours.get("memory"))
        if os.path.isfile(os.path.join(parent, "memory.limit_in_bytes")) and os.access(parent, os.W_OK):
            pids = _our_folder(v1_pids, ours.get("pids")) if v1_pids else None
            return _swept(Hierarchy(MemoryCap.CGROUP_V1, parent,
                                    pids if pids and os.access(pids, os.W_OK) else None))
        reasons.append(f"cgroup v1 memory at {parent}: not writable")
    log.warning("sandbox: no usable cgroup (%s); memory is capped per process only",
                "; ".join(reasons) or "no cgroup filesystem mounted")
    return None


def _swept(hierarchy: Hierarchy) -> Hierarchy:
    """`hierarchy`, rid of the groups left by ponder processes that died mid-run (killed, so never cleaned up)."""
    for parent in (hierarchy.memory, hierarchy.pids):
        for name in os.listdir(parent) if parent else ():
            ns, _, rest = name.removeprefix(_PREFIX).partition("-")
            owner = rest.partition("-")[0]
            # only our pid namespace's: a pid says nothing about another's (the pids root may be shared)
            if name.startswith(_PREFIX) and ns == _pid_namespace() and owner.isdigit() and not _alive(int(owner)):
                group = RunGroup(hierarchy.cap, os.path.join(str(parent), name))
                group.kill()
                group.remove()
    return hierarchy


def _pid_namespace() -> str:
    with contextlib.suppress(OSError):
        return "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _v2_usable(parent: str) -> str | None:
    """Why children of `parent` cannot have a memory cap, or None if they can (enabling the controllers if need be)."""
    available = (_read(parent, "cgroup.controllers") or "").split()
    if "memory" not in available:
        return "the memory controller is not available there"
    enabled = (_read(parent, "cgroup.subtree_control") or "").split()
    wanted = [c for c in ("memory", "pids") if c in available and c not in enabled]
    if wanted:
        try:
            _write(parent, "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except OSError as exc:  # EBUSY: the group holds processes (ours), so it may not delegate controllers
            return f"cannot enable {', '.join(wanted)} for its children ({exc.strerror}); set {PARENT_ENV}"
    return None


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root within the hierarchy, mount point, fstype, super options) of each cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                point = fields[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
                out.append((fields[3], point, tail[0], set(tail[2].split(","))))
    return out


def _our_groups() -> dict[str, str]:
    """Our group's path per controller ("" for the v2 hierarchy), from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                groups[c] = path
    return groups


def _our_folder(mount: tuple[str, str, str, set[str]], path: str | None) -> str:
    """Our group's folder under `mount`, or the mount point when it is not visible there (a cgroup namespace)."""
    root, point = mount[0], mount[1]
    if path is not None and (path == root or path.startswith(root.rstrip("/") + "/")):
        folder = os.path.join(point, path[len(root):].lstrip("/"))
        if os.path.isdir(folder):
            return folder.rstrip("/")
    return point


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # gone already, or no pidfds (Linux < 5.3)
        return None


def _sigkill(pid: int, fd: int | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if fd is not None:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _exited(fd: int, deadline: float) -> bool:
    """Wait until the process behind a pidfd has exited (the pidfd turns readable), at most until `deadline`."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, deadline - time.monotonic()) * 1000))


def _read(folder: str, name: str) -> str | None:
    with contextlib.suppress(OSError), open(os.path.join(folder, name)) as f:
        return f.read()
    return None


def _write(folder: str, name: str, value: str) -> None:
    with open(os.path.join(folder, name), "w") as f:
        f.write(value)


def _write_if_present(folder: str, name: str, value: str) -> None:
    if os.path.exists(os.path.join(folder, name)):
        _write(folder, name, value)


def _rmdir(folder: str) -> None:
    deadline = time.monotonic() + _KILL_WAIT_S
    while True:
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY while its last processes finish exiting
            if time.monotonic() > deadline:
                log.warning("sandbox: could not remove cgroup %s: %s", folder, exc.strerror)
                return
            time.sleep(0.005)

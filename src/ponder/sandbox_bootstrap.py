"""The sandbox's bootstrap: run as a script (`python -I -S sandbox_bootstrap.py SPEC`), it becomes the program.

It joins the run's cgroup first, so nothing of the program ever runs outside it; then it sets the rlimits and
execs the program. In namespace mode it starts as root inside the new namespaces, makes the private mounts, drops
to the run's unprivileged uid, and stays pid 1 of the namespace with the program as its child.
See `ponder.sandbox` for the threat model. Standard library only: with -I -S, ponder itself is not importable.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from typing import Any

PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
"""Covered by a private tmpfs: the world-writable folders, and /run with its unix sockets (databases, dbus)."""
CGROUP_JOIN_FAILED = 125
"""Exit status when the run's cgroup could not be joined: the program is never run without its cap."""
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 2, 4, 4096, 16384
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


def set_limits(limits: dict[str, Any]) -> None:
    """The rlimits of `ponder.sandbox.Limits` (given as its dict) on this process and what it execs."""
    mb = 1 << 20
    cpu = max(1, int(float(limits["cpu_s"]) + 0.999))
    for res, value in (
        (resource.RLIMIT_AS, int(limits["memory_mb"]) * mb),
        (resource.RLIMIT_FSIZE, int(limits["fsize_mb"]) * mb),
        (resource.RLIMIT_NOFILE, int(limits["nofile"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, int(limits["nproc"])),  # not enforced for root: hence the uid drop in namespace mode
    ):
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU first (a readable reason), SIGKILL after


def join_cgroup(procs_files: list[str]) -> None:
    """Move this process into the run's group(s) ("0" is the writer); exit rather than run the program uncapped."""
    try:
        for path in procs_files:
            with open(path, "w") as f:
                f.write("0")
    except OSError as exc:
        sys.stderr.write(f"sandbox: could not join the run's cgroup ({exc}); the program was not run\n")
        sys.stderr.flush()
        os._exit(CGROUP_JOIN_FAILED)


def _mount(libc: object, source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    args = [None if a is None else a.encode() for a in (source, target, fstype)]
    if libc.mount(*args, flags, None if data is None else data.encode()) != 0:  # type: ignore[attr-defined]
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _blocked_ancestor(path: str) -> str | None:
    """The top-most folder on `path` that others cannot enter or read, if any."""
    parts = os.path.normpath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        p = os.sep.join(parts[:i])
        if os.path.isdir(p) and (os.stat(p).st_mode & 0o005) != 0o005:
            return p
    return None


def bootstrap(spec: dict[str, Any]) -> None:
    join_cgroup([str(p) for p in spec.get("cgroup", [])])
    limits = spec["limits"]
    python = str(spec["python"])
    if spec["mode"] == "rlimits":
        set_limits(limits)
        os.execv(python, [python, "-I", str(spec["source"])])
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open(str(spec["source"]), "rb") as f:
        source = f.read()  # read before /tmp is covered
    _private_mounts(libc, [str(p) for p in spec["keep"]], int(limits["tmpfs_mb"]))
    uid = int(spec["uid"])
    with open("/tmp/main.py", "wb") as f:
        f.write(source)
    os.chown("/tmp/main.py", uid, uid)
    os.chdir("/tmp")
    set_limits(limits)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a uid change cleared the one unshare set
    _run_as_init(python)


def _private_mounts(libc: object, keep: list[str], tmpfs_mb: int) -> None:
    """Cover world-writable and private folders with tmpfs, then bind the `keep` folders (Python) back in."""
    keep_fds = {p: os.open(p, os.O_PATH) for p in keep}
    hidden = {b for b in (_blocked_ancestor(p) for p in keep) if b}
    flags = _MS_NOSUID | _MS_NODEV
    for d in PRIVATE_TMPFS:
        if os.path.isdir(d):
            _mount(libc, "tmpfs", d, "tmpfs", flags, f"size={tmpfs_mb}m,mode=1777")
    for d in sorted(hidden):
        _mount(libc, "tmpfs", d, "tmpfs", flags, "size=1m,mode=755")
    for p, fd in keep_fds.items():
        if any(p == h or p.startswith(h + os.sep) for h in hidden | set(PRIVATE_TMPFS)):
            os.makedirs(p, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{fd}", p, None, _MS_BIND | _MS_REC, None)
        os.close(fd)


def _run_as_init(python: str) -> None:
    """Stay pid 1 of the namespace (reaping orphans), run the program as its child, exit with its status."""
    child = os.fork()
    if child == 0:
        try:
            os.execv(python, [python, "-I", "/tmp/main.py"])
        finally:
            os._exit(127)
    while True:
        pid, status = os.wait()
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    bootstrap(json.loads(sys.argv[1]))

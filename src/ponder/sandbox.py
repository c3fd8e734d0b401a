"""Run untrusted, model-written Python in a sandboxed subprocess. This module owns nothing else.

Threat model: the program is hostile. It may loop forever, fork-bomb, allocate without bound, write anywhere it
can, read secrets from the environment or the home folder, and open sockets. The host (and the sweep that called
us) must carry on unharmed, and the program must get a failing result.

Defences, strongest mode ("namespaces", used when we are root and util-linux `unshare` works):
- `unshare --net --pid --mount --ipc --uts --fork --kill-child --mount-proc` puts the program in new network, pid,
  mount, IPC and hostname namespaces. The network namespace has only a downed loopback: no socket reaches the host
  or the internet (abstract unix sockets are per network namespace too). The pid namespace dies with its first
  process, so nothing the program forks can outlive it.
- A small bootstrap (this file run as a script) mounts private, size-capped tmpfs over /tmp, /var/tmp, /dev/shm
  (world-writable) and /run (host unix sockets), and over folders that are not world-readable (e.g. /root, which
  holds the Python install here: that install is bind-mounted back in), so the program sees none of the host's
  temp files, sockets or home folder, and its writes vanish with the namespace.
- It then drops to a fresh unprivileged uid/gid (random, per run; no groups; no_new_privs), so the rest of the
  filesystem is read-only to the program and RLIMIT_NPROC is enforced (it is not for root), per run.
- Resource limits (setrlimit): address space (memory), CPU seconds, processes, file size (which also caps the
  output, read from files rather than pipes), open files, no core dumps.
- A wall-clock timeout SIGKILLs the whole process group (a new session); the pid namespace takes the rest.
- The environment is a minimal clean dict (PATH, LANG, HOME): no inherited secrets. Python runs with -I.

Fallback ("rlimits", when not root, or `unshare` is missing or refused, e.g. in an unprivileged container):
the same temp folder, clean environment, new session, rlimits and wall-clock kill, but no network or filesystem
isolation, and RLIMIT_NPROC only bites when not root. `isolation()` says which mode is in force; tests that need
the namespaces skip with that reason. In both modes, world-readable host files stay readable (read-only).
Memory is limited per process: with the process cap the total is bounded by nproc * memory_mb (no cgroup here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

_UNSHARE_ARGS = ("--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc")
_PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
"""Covered by a private tmpfs: the world-writable folders, and /run with its unix sockets (databases, dbus)."""
_ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
"""Numeric libraries would otherwise start a thread per core and hit the process cap on a big machine."""
_MAX_OUTPUT = 1 << 20
"""Characters of stdout/stderr kept in a result."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed program did."""

    stdout: str
    stderr: str
    returncode: int
    """The exit status; negative (or 128 + N in namespace mode) when killed by signal N."""
    timed_out: bool
    """True when the wall-clock timeout killed it."""
    killed: str | None
    """Why it was stopped, when a limit stopped it ("timeout", "memory limit", ...); None otherwise."""
    seconds: float
    """Wall-clock seconds of the run."""
    isolation: str = "namespaces"
    """The mode it ran in: "namespaces" or "rlimits" (see the module docstring)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run."""

    memory_mb: int = 512
    """Address space per process, in MiB."""
    cpu_s: float = 5.0
    """CPU seconds per process."""
    nproc: int = 32
    """Processes (and threads) the sandbox uid may have."""
    fsize_mb: int = 16
    """Largest file (and stdout/stderr) it may write, in MiB."""
    nofile: int = 64
    """Open file descriptors."""
    tmpfs_mb: int = 64
    """Size of each private tmpfs (the working folder among them), in MiB."""


def compiles(source: str) -> bool:
    """Whether `source` is syntactically valid Python (compiled, never run)."""
    try:
        compile(source, "<program>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def run_python(source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
               cpu_s: float | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and return what it printed and how it ended."""
    limits = Limits(memory_mb=memory_mb, cpu_s=cpu_s if cpu_s is not None else timeout_s)
    return _run(source, stdin, timeout_s, limits, isolation())


async def run_python_async(source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
                           cpu_s: float | None = None) -> SandboxResult:
    """run_python in a worker thread, so many programs can run at once from async code."""
    import asyncio

    return await asyncio.to_thread(run_python, source, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb,
                                   cpu_s=cpu_s)


@lru_cache(maxsize=1)
def isolation() -> str:
    """"namespaces" if the strong mode works on this machine (probed once), else "rlimits"."""
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare"):
        return "rlimits"
    probe = _run("print(6 * 7)", "", 20.0, Limits(), "namespaces")
    if probe.returncode == 0 and probe.stdout.strip() == "42":
        return "namespaces"
    logging.getLogger(__name__).warning(
        "sandbox: namespaces unavailable (%s), falling back to rlimits only: no network or filesystem isolation",
        (probe.killed or probe.stderr.strip().splitlines()[-1:] or [f"exit {probe.returncode}"]))
    return "rlimits"


def _run(source: str, stdin: str, timeout_s: float, limits: Limits, mode: str) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="ponder-sandbox-")
    try:
        main = os.path.join(workdir, "main.py")
        with open(main, "w", encoding="utf-8") as f:
            f.write(source)
        with open(os.path.join(workdir, "stdin"), "w", encoding="utf-8") as f:
            f.write(stdin)
        argv, cwd, home = _command(main, workdir, limits, mode)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, **_ONE_THREAD}
        return _supervise(argv, cwd, env, workdir, timeout_s, mode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _command(main: str, workdir: str, limits: Limits, mode: str) -> tuple[list[str], str, str]:
    """The argv to start (the bootstrap, which sets the limits and execs the program), its folder, and HOME."""
    spec = {
        "mode": mode,
        "source": main,
        "limits": asdict(limits),
        "uid": random.randint(200_000, 1_999_999),  # fresh per run: RLIMIT_NPROC counts per uid
        "python": sys.executable,
        "keep": sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}),
    }
    # No preexec_fn: it is unsafe with threads (run_python_async); the bootstrap does that work after exec.
    bootstrap = [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(spec)]
    if mode == "rlimits":
        return bootstrap, workdir, workdir
    return [shutil.which("unshare") or "unshare", *_UNSHARE_ARGS, *bootstrap], workdir, "/tmp"


def _supervise(argv: list[str], cwd: str, env: dict[str, str], workdir: str, timeout_s: float,
               mode: str) -> SandboxResult:
    out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
    start = time.monotonic()
    timed_out = False
    with open(os.path.join(workdir, "stdin"), "rb") as fin, open(out_path, "wb") as fout, \
            open(err_path, "wb") as ferr:
        proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, cwd=cwd, env=env,
                                start_new_session=True, close_fds=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)  # stray children of a finished program die too
            proc.wait()
    seconds = time.monotonic() - start
    stdout, stderr = _read(out_path), _read(err_path)
    killed = "timeout" if timed_out else _why_killed(proc.returncode, stderr)
    return SandboxResult(stdout, stderr, proc.returncode, timed_out, killed, seconds, mode)


def _set_limits(limits: Limits) -> None:
    mb = 1 << 20
    cpu = max(1, int(limits.cpu_s + 0.999))
    for res, value in (
        (resource.RLIMIT_AS, limits.memory_mb * mb),
        (resource.RLIMIT_FSIZE, limits.fsize_mb * mb),
        (resource.RLIMIT_NOFILE, limits.nofile),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, limits.nproc),  # not enforced for root: hence the uid drop in namespace mode
    ):
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU first (a readable reason), SIGKILL after


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(_MAX_OUTPUT * 4)
    return data.decode("utf-8", errors="replace")[:_MAX_OUTPUT]


def _why_killed(returncode: int, stderr: str) -> str | None:
    if returncode == 0:
        return None
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory limit"
    if "File too large" in stderr:
        return "file size limit"
    names = {signal.SIGXCPU: "cpu time limit", signal.SIGXFSZ: "file size limit", signal.SIGKILL: "killed",
             signal.SIGSEGV: "segmentation fault"}
    return names.get(sig) if sig else None  # type: ignore[call-overload]


# ---- the bootstrap: sets the limits and becomes the program; in namespace mode it starts as root inside the ----
# ---- new namespaces, makes the private mounts, and drops to the unprivileged uid first -------------------------

_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 2, 4, 4096, 16384
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


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


def _bootstrap(spec: dict[str, Any]) -> None:
    limits = Limits(**spec["limits"])
    python = str(spec["python"])
    if spec["mode"] == "rlimits":
        _set_limits(limits)
        os.execv(python, [python, "-I", str(spec["source"])])
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open(str(spec["source"]), "rb") as f:
        source = f.read()  # read before /tmp is covered
    _private_mounts(libc, [str(p) for p in spec["keep"]], limits.tmpfs_mb)
    uid = int(spec["uid"])
    with open("/tmp/main.py", "wb") as f:
        f.write(source)
    os.chown("/tmp/main.py", uid, uid)
    os.chdir("/tmp")
    _set_limits(limits)
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
    for d in _PRIVATE_TMPFS:
        if os.path.isdir(d):
            _mount(libc, "tmpfs", d, "tmpfs", flags, f"size={tmpfs_mb}m,mode=1777")
    for d in sorted(hidden):
        _mount(libc, "tmpfs", d, "tmpfs", flags, "size=1m,mode=755")
    for p, fd in keep_fds.items():
        if any(p == h or p.startswith(h + os.sep) for h in hidden | set(_PRIVATE_TMPFS)):
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
    _bootstrap(json.loads(sys.argv[1]))

"""Run untrusted, model-written Python in a sandboxed subprocess. This module owns nothing else.

Threat model: the program is hostile. It may loop forever, fork-bomb, allocate without bound, write anywhere it
can, read secrets from the environment or the home folder, and open sockets. The host (and the sweep that called
us) must carry on unharmed, and the program must get a failing result.

Defences, strongest mode ("namespaces", used when we are root and util-linux `unshare` works):
- `unshare --net --pid --mount --ipc --uts --fork --kill-child --mount-proc` puts the program in new network, pid,
  mount, IPC and hostname namespaces. The network namespace has only a downed loopback: no socket reaches the host
  or the internet (abstract unix sockets are per network namespace too). The pid namespace dies with its first
  process, so nothing the program forks can outlive it.
- A small bootstrap (`ponder.sandbox_bootstrap`, run as a script) mounts private, size-capped tmpfs over /tmp,
  /var/tmp, /dev/shm (world-writable) and /run (host unix sockets), and over folders that are not world-readable
  (e.g. /root, which holds the Python install here: that install is bind-mounted back in), so the program sees
  none of the host's temp files, sockets or home folder, and its writes vanish with the namespace.
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

Memory and processes are capped per run, in either mode, where the kernel allows it (`ponder.cgroups`): each run
gets a fresh cgroup (v2, else v1) holding its memory cap (no swap) and process cap; the bootstrap joins it before
the program starts, and on exit everything in it is killed and the group removed. An out-of-memory kill anywhere
in the run fails it ("memory limit"). Where no cgroup is usable, memory is capped per process only (RLIMIT_AS:
with the process cap a run may hold nproc x memory_mb); `memory_cap()` and each result's `memory_cap` say which.

Cancelling the task that awaits `run_python_async` kills the run, and the CancelledError comes out only once the
program is dead; `sandbox_scope()` extends that to every run started within it (gather returns early), so whoever
counts work in flight (the server) counts it until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from functools import lru_cache

from ponder import cgroups, sandbox_bootstrap
from ponder.cgroups import Hierarchy, MemoryCap, RunGroup

__all__ = ["Limits", "MemoryCap", "SandboxResult", "Stop", "compiles", "isolation", "memory_cap", "run_python",
           "run_python_async", "sandbox_scope"]

log = logging.getLogger(__name__)

_UNSHARE_ARGS = ("--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc")
_ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
"""Numeric libraries would otherwise start a thread per core and hit the process cap on a big machine."""
_MAX_OUTPUT = 1 << 20
"""Characters of stdout/stderr kept in a result."""
_SCOPE: contextvars.ContextVar[dict[Stop, asyncio.Future[SandboxResult]] | None] = contextvars.ContextVar(
    "ponder_sandbox_scope", default=None)
"""The runs of the innermost sandbox_scope, shared by the tasks started within it (they copy the context)."""
_PROBES = threading.Lock()
"""The first runs, in threads at once, would each probe the machine."""
_STOP_POLL_S = 0.02
"""How soon a run notices a stop (a cancelled run_python_async)."""


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
    memory_cap: MemoryCap = MemoryCap.RLIMIT
    """How its memory was capped: the whole run in a cgroup, or each process only."""
    peak_memory_mb: float | None = None
    """Peak memory of the whole run (all its processes), where a cgroup measured it."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.killed is None


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run."""

    memory_mb: int = 512
    """Memory in MiB: of the whole run where a cgroup caps it (see memory_cap()), and of each process always."""
    cpu_s: float = 5.0
    """CPU seconds per process."""
    nproc: int = 32
    """Processes (and threads) the run may have."""
    fsize_mb: int = 16
    """Largest file (and stdout/stderr) it may write, in MiB."""
    nofile: int = 64
    """Open file descriptors."""
    tmpfs_mb: int = 64
    """Size of each private tmpfs (the working folder among them), in MiB."""


class Stop:
    """Asks a run to stop, from another thread: its supervisor kills it within _STOP_POLL_S; if it has not
    started yet, it never starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self.stopped = False

    def start(self, popen: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self.stopped:
                return None
            self._started = True
            return popen()

    def stop(self) -> bool:
        """True when the run had started (the caller should wait for it to end: its supervisor kills it)."""
        with self._lock:
            self.stopped = True
            return self._started


def compiles(source: str) -> bool:
    """Whether `source` is syntactically valid Python (compiled, never run)."""
    try:
        compile(source, "<program>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def run_python(source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
               cpu_s: float | None = None, stop: Stop | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and return what it printed and how it ended."""
    limits = Limits(memory_mb=memory_mb, cpu_s=cpu_s if cpu_s is not None else timeout_s)
    return _run(source, stdin, timeout_s, limits, isolation(), _hierarchy(), stop)


async def run_python_async(source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
                           cpu_s: float | None = None) -> SandboxResult:
    """run_python in a worker thread, so many programs can run at once from async code. Cancelled, it kills the
    program and raises CancelledError once the program is dead."""
    stop = Stop()
    future = asyncio.get_running_loop().run_in_executor(
        None, lambda: run_python(source, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                                 stop=stop))
    scope = _SCOPE.get()
    if scope is not None:
        scope[stop] = future
        future.add_done_callback(lambda _: scope.pop(stop, None))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if stop.stop():
            await _outlive(future)
        raise


@contextlib.asynccontextmanager
async def sandbox_scope() -> AsyncIterator[None]:
    """Every sandbox run started within (by this task or the tasks it starts) is dead once this exits, however it
    exits: runs still going are stopped and waited for, through cancellation too. asyncio.gather needs it: one
    cancelled child ends the gather while its siblings' sandboxes are still being killed."""
    runs: dict[Stop, asyncio.Future[SandboxResult]] = {}
    token = _SCOPE.set(runs)
    try:
        yield
    finally:
        _SCOPE.reset(token)
        for stop, future in list(runs.items()):
            if stop.stop():
                await _outlive(future)


async def _outlive(future: asyncio.Future[SandboxResult]) -> None:
    """Wait for `future` to finish, even through further cancellations (the caller re-raises the first)."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([future])


def isolation() -> str:
    """"namespaces" if the strong mode works on this machine (probed once), else "rlimits"."""
    with _PROBES:
        return _isolation()


@lru_cache(maxsize=1)
def _isolation() -> str:
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare"):
        return "rlimits"
    probe = _run("print(6 * 7)", "", 20.0, Limits(), "namespaces")
    if probe.returncode == 0 and probe.stdout.strip() == "42":
        return "namespaces"
    log.warning(
        "sandbox: namespaces unavailable (%s), falling back to rlimits only: no network or filesystem isolation",
        (probe.killed or probe.stderr.strip().splitlines()[-1:] or [f"exit {probe.returncode}"]))
    return "rlimits"


def memory_cap() -> MemoryCap:
    """How runs' memory is capped on this machine (probed once): a cgroup per run, or per-process rlimits only."""
    found = _hierarchy()
    return found.cap if found else MemoryCap.RLIMIT


def _hierarchy() -> Hierarchy | None:
    """The cgroup hierarchy runs are capped in, once a probe run has joined a group there; None if none works."""
    with _PROBES:
        return _probe_hierarchy()


@lru_cache(maxsize=1)
def _probe_hierarchy() -> Hierarchy | None:
    found = cgroups.detect()
    if found is None:
        return None
    probe = _run("print(open('/proc/self/cgroup').read())", "", 20.0, Limits(), "rlimits", found)
    if probe.ok and probe.memory_cap is found.cap and "ponder-sandbox-" in probe.stdout:
        return found
    log.warning("sandbox: a %s group could not be joined (%s); memory is capped per process only", found.cap,
                probe.stderr.strip().splitlines()[-1:] or [f"exit {probe.returncode}"])
    return None


def _run(source: str, stdin: str, timeout_s: float, limits: Limits, mode: str, hierarchy: Hierarchy | None = None,
         stop: Stop | None = None) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="ponder-sandbox-")
    group = None
    try:
        main = os.path.join(workdir, "main.py")
        with open(main, "w", encoding="utf-8") as f:
            f.write(source)
        with open(os.path.join(workdir, "stdin"), "w", encoding="utf-8") as f:
            f.write(stdin)
        group = _new_group(hierarchy, limits)
        argv, cwd, home = _command(main, workdir, limits, mode, group)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, **_ONE_THREAD}
        return _supervise(argv, cwd, env, workdir, timeout_s, mode, group, stop or Stop())
    finally:
        if group is not None:
            group.kill()
            group.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def _new_group(hierarchy: Hierarchy | None, limits: Limits) -> RunGroup | None:
    if hierarchy is None:
        return None
    try:
        return cgroups.create(hierarchy, limits.memory_mb, limits.nproc + 1)  # + 1: the namespace's init
    except OSError as exc:  # this run falls back to per-process limits, and its result says so
        log.warning("sandbox: could not make a %s group (%s); this run's memory is capped per process only",
                    hierarchy.cap, exc)
        return None


def _command(main: str, workdir: str, limits: Limits, mode: str,
             group: RunGroup | None) -> tuple[list[str], str, str]:
    """The argv to start (the bootstrap, which joins the cgroup, sets the limits and execs the program), its folder,
    and HOME."""
    spec = {
        "mode": mode,
        "source": main,
        "limits": asdict(limits),
        "cgroup": group.procs_files if group else [],
        "uid": random.randint(200_000, 1_999_999),  # fresh per run: RLIMIT_NPROC counts per uid
        "python": sys.executable,
        "keep": sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}),
    }
    # No preexec_fn: it is unsafe with threads (run_python_async); the bootstrap does that work after exec.
    bootstrap = [sys.executable, "-I", "-S", os.path.abspath(sandbox_bootstrap.__file__), json.dumps(spec)]
    if mode == "rlimits":
        return bootstrap, workdir, workdir
    return [shutil.which("unshare") or "unshare", *_UNSHARE_ARGS, *bootstrap], workdir, "/tmp"


def _supervise(argv: list[str], cwd: str, env: dict[str, str], workdir: str, timeout_s: float, mode: str,
               group: RunGroup | None, stop: Stop) -> SandboxResult:
    out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
    cap = group.cap if group else MemoryCap.RLIMIT
    start = time.monotonic()
    with open(os.path.join(workdir, "stdin"), "rb") as fin, open(out_path, "wb") as fout, \
            open(err_path, "wb") as ferr:
        proc = stop.start(lambda: subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, cwd=cwd, env=env,
                                                   start_new_session=True, close_fds=True))
        if proc is None:  # stopped before it started
            return SandboxResult("", "", -signal.SIGKILL, False, "cancelled", 0.0, mode, cap)
        try:
            exited = _exited_within(proc, timeout_s, stop)
        finally:
            if group is not None:
                group.kill()  # first: the group knows every process, wherever it moved (waits for each to die)
            _kill_group(proc.pid)  # then the rest of the process group (unshare; everything, without a cgroup)
            proc.wait()
    timed_out = not exited and not stop.stopped
    seconds = time.monotonic() - start
    stdout, stderr = _read(out_path), _read(err_path)
    peak, ooms = (group.peak_mb(), group.oom_killed()) if group else (None, 0)
    killed = ("cancelled" if stop.stopped else "memory limit" if ooms else "timeout" if timed_out
              else _why_killed(proc.returncode, stderr))
    return SandboxResult(stdout, stderr, proc.returncode, timed_out, killed, seconds, mode, cap, peak)


def _exited_within(proc: subprocess.Popen[bytes], timeout_s: float, stop: Stop) -> bool:
    """Wait until the program's leader exits (True), the timeout passes or a stop comes (False). The leader is
    not reaped here, so its pid, the process group's id, cannot be someone else's when we kill the group."""
    deadline = time.monotonic() + timeout_s
    try:
        fd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): wait and reap, as before
        fd = None
    try:
        poller = select.poll()
        if fd is not None:
            poller.register(fd, select.POLLIN)  # readable once the process has exited
        while not stop.stopped and (left := deadline - time.monotonic()) > 0:
            wait = min(left, _STOP_POLL_S)
            if fd is not None and poller.poll(wait * 1000):
                return True
            if fd is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
                    return True
        return False
    finally:
        if fd is not None:
            os.close(fd)


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

"""The sandbox against hostile programs: each attack fails, the host is unharmed, and the next run still works.
A run is capped as a whole (a cgroup per run) where the kernel allows it, and cancelling it kills it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import textwrap
import time
import uuid

import pytest

from _procs import alive, sandbox_pids
from ponder import cgroups
from ponder.sandbox import Limits, MemoryCap, _hierarchy, _run, isolation, memory_cap, run_python, run_python_async

pytestmark = pytest.mark.timeout(60)

needs_namespaces = pytest.mark.skipif(
    isolation() != "namespaces",
    reason="sandbox runs in 'rlimits' fallback mode here (not root or no usable `unshare`): "
    "no network/filesystem isolation, and a fork bomb would not be contained",
)


needs_cgroup = pytest.mark.skipif(
    memory_cap() is MemoryCap.RLIMIT,
    reason="no usable cgroup here: memory is capped per process only (the documented fallback)",
)


def _uids_alive(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def test_namespaces_are_used_where_the_kernel_allows_them():
    # a broken bootstrap must fail here, not silently turn the isolation tests below into skips
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("not root, or no util-linux unshare: the documented rlimits fallback applies")
    if subprocess.run(["unshare", "--net", "--pid", "--mount", "--fork", "true"]).returncode != 0:
        pytest.skip("this kernel or container refuses new namespaces: the documented rlimits fallback applies")
    assert isolation() == "namespaces"


def test_cpu_time_limit_stops_a_busy_program():
    r = run_python("while True:\n    pass", timeout_s=20.0, cpu_s=1)
    assert not r.ok and not r.timed_out
    assert r.killed == "cpu time limit"
    assert r.seconds < 15


def test_normal_program_runs_and_reads_stdin():
    r = run_python("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", stdin="1 2 3 4")
    assert r.ok and r.returncode == 0
    assert r.stdout.strip() == "10"
    assert r.killed is None and not r.timed_out


def test_failing_program_reports_its_error():
    r = run_python("raise ValueError('nope')")
    assert r.returncode == 1 and not r.ok
    assert "ValueError: nope" in r.stderr


def test_infinite_loop_is_killed_by_the_wall_clock():
    start = time.monotonic()
    r = run_python("while True:\n    pass", timeout_s=1.0, cpu_s=30)
    assert r.timed_out and r.killed == "timeout" and not r.ok
    assert time.monotonic() - start < 10


def test_sleeping_program_is_killed_too():
    r = run_python("import time\ntime.sleep(60)", timeout_s=1.0)
    assert r.timed_out and r.seconds < 10


def test_ten_gigabytes_cannot_be_allocated():
    r = run_python("x = bytearray(10 * 1024 ** 3)\nprint('allocated')", memory_mb=256)
    assert not r.ok
    assert "allocated" not in r.stdout
    assert r.killed == "memory limit"


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("FAKE_SECRET", "hunter2-" + uuid.uuid4().hex)
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('FAKE_SECRET'))")
    assert r.ok
    assert "hunter2" not in r.stdout
    assert "FAKE_SECRET" not in r.stdout


@needs_namespaces
def test_writes_outside_the_sandbox_do_not_reach_the_host(tmp_path):
    tag = uuid.uuid4().hex
    targets = [f"/tmp/outside_{tag}", f"/root/outside_{tag}", os.path.expanduser(f"~/outside_{tag}"),
               f"/etc/outside_{tag}", str(tmp_path / f"outside_{tag}"), f"{os.getcwd()}/outside_{tag}"]
    program = textwrap.dedent(f"""
        for path in {targets!r}:
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                print("wrote", path)
            except OSError as e:
                print("refused", path, type(e).__name__)
    """)
    r = run_python(program)
    assert r.ok, r.stderr
    for path in targets:
        assert not os.path.exists(path), f"sandboxed program wrote {path} on the host"
    # only the private /tmp (a tmpfs that dies with the run) accepted a write
    assert r.stdout.count("refused") == len(targets) - 1


@needs_namespaces
def test_fork_bomb_is_contained_and_cleaned_up():
    program = textwrap.dedent("""
        import os
        print(os.getuid(), flush=True)
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """)
    start = time.monotonic()
    r = run_python(program, timeout_s=2.0)
    assert r.timed_out and not r.ok
    assert time.monotonic() - start < 15, "the host did not stay responsive"
    uid = int(r.stdout.split()[0])
    assert uid != 0
    deadline = time.monotonic() + 5
    while _uids_alive(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _uids_alive(uid) == [], "processes of the fork bomb outlived the sandbox"


@needs_namespaces
def test_background_children_die_with_the_program():
    program = textwrap.dedent("""
        import os, subprocess
        subprocess.Popen(["sleep", "300"], start_new_session=True)
        print(os.getuid(), flush=True)
    """)
    r = run_python(program)
    assert r.ok, r.stderr
    uid = int(r.stdout.split()[0])
    time.sleep(0.2)
    assert _uids_alive(uid) == []


@needs_namespaces
def test_sockets_cannot_reach_a_listening_host_server():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        program = textwrap.dedent(f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("connected")
        """)
        r = run_python(program)
        assert not r.ok
        assert "connected" not in r.stdout
        assert "Error" in r.stderr
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


@needs_namespaces
def test_home_folder_secrets_are_hidden():
    r = run_python("import os\nprint(os.listdir('/root'))\nprint(open('/proc/1/cmdline').read())")
    assert r.ok, r.stderr
    assert ".cache" not in r.stdout and ".ssh" not in r.stdout


def test_huge_output_is_capped():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout_s=5.0)
    assert not r.ok
    assert len(r.stdout) <= 1 << 20


def test_many_runs_concurrently_and_after_attacks_a_normal_program_still_works():
    async def main():
        return await asyncio.gather(*(run_python_async(f"print({i} * {i})") for i in range(4)))

    results = asyncio.run(main())
    assert [r.stdout.strip() for r in results] == ["0", "1", "4", "9"]
    after = run_python("import math, fractions\nprint(math.comb(10, 3), fractions.Fraction(6, 4))")
    assert after.ok and after.stdout.split() == ["120", "3/2"]


def test_fallback_mode_still_limits_time_memory_and_environment(monkeypatch):
    monkeypatch.setenv("FAKE_SECRET", "hunter2")
    ok = _run("import os\nprint(os.environ.get('FAKE_SECRET'), os.getcwd())", "", 5.0, Limits(), "rlimits")
    assert ok.ok and ok.isolation == "rlimits"
    assert ok.memory_cap is MemoryCap.RLIMIT and ok.peak_memory_mb is None  # the result says it was per process
    assert ok.stdout.split()[0] == "None" and "ponder-sandbox-" in ok.stdout
    loop = _run("while True:\n    pass", "", 1.0, Limits(cpu_s=30), "rlimits")
    assert loop.timed_out and loop.killed == "timeout"
    big = _run("x = bytearray(10 * 1024 ** 3)", "", 5.0, Limits(memory_mb=256), "rlimits")
    assert big.killed == "memory limit"


def test_numpy_style_libraries_import_inside_the_limits():
    r = run_python("import fractions, math, sympy\nprint(sympy.Rational(1, 3) + fractions.Fraction(1, 6))",
                   timeout_s=30)
    assert r.ok, r.stderr
    assert r.stdout.strip() == "1/2"


@needs_namespaces
def test_host_unix_sockets_are_out_of_reach(tmp_path):
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    os.chmod(tmp_path, 0o777)
    server.listen(1)
    server.setblocking(False)
    try:
        program = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\nprint('connected')"
        r = run_python(program)
        assert not r.ok and "connected" not in r.stdout
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_a_cgroup_caps_each_run_where_the_kernel_allows_it():
    # a broken cgroup path must fail here, not silently turn the whole-run memory tests into skips
    found = cgroups.detect()
    if found is None:
        pytest.skip("no usable cgroup on this machine: the documented per-process fallback applies")
    assert memory_cap() is found.cap
    r = run_python("print(open('/proc/self/cgroup').read())")
    assert r.ok and r.memory_cap is found.cap and "ponder-sandbox-" in r.stdout
    assert r.peak_memory_mb is not None and 0 < r.peak_memory_mb < 512
    assert [d for d in os.listdir(found.memory) if f"-{os.getpid()}-" in d] == []  # removed after the run


@needs_cgroup
def test_forked_children_cannot_exceed_the_memory_cap_together():
    # five children of 300 MB each: 1.5 GB at once under a per-process cap of 512 MB; a cap on the run holds one
    program = textwrap.dedent("""
        import os, time
        deadline = time.time() + 1.5
        kids = []
        for i in range(5):
            pid = os.fork()
            if pid == 0:
                block = bytearray(b"x") * (300 << 20)  # every page written, so every page is charged
                time.sleep(max(0.0, deadline - time.time()))
                os._exit(0 if block.count(b"x") == len(block) else 1)  # still held all of it at the deadline
            kids.append(pid)
        print("held", sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in kids), flush=True)
    """)
    r = run_python(program, memory_mb=512, timeout_s=30.0)
    held = int(r.stdout.split()[-1])
    assert held * 300 <= 512, f"{held} children held 300 MB each at the same time under memory_mb=512"
    assert r.peak_memory_mb is not None and r.peak_memory_mb <= 512
    assert not r.ok and r.killed == "memory limit"


@needs_cgroup
def test_the_process_cap_holds_per_run_even_as_root_without_namespaces():
    found = _hierarchy()
    assert found is not None
    if found.cap is MemoryCap.CGROUP_V1 and found.pids is None:
        pytest.skip("no cgroup v1 pids hierarchy here: the process cap is RLIMIT_NPROC only")
    program = textwrap.dedent("""
        import os, time
        n = 0
        try:
            while n < 100:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError:
            pass
        print(n, flush=True)
    """)
    r = _run(program, "", 20.0, Limits(nproc=8), "rlimits", found)  # as root, RLIMIT_NPROC would not bite
    assert r.ok, r.stderr
    assert int(r.stdout) <= 8


def test_cancelling_the_awaiting_task_kills_the_program_within_a_second():
    marker = f"cancel-me-{uuid.uuid4().hex}"

    async def main() -> tuple[set[int], float]:
        task = asyncio.create_task(run_python_async(f"# {marker}\nwhile True:\n    pass", timeout_s=30.0))
        deadline = time.monotonic() + 15
        while len(pids := sandbox_pids(marker)) < (2 if isolation() == "namespaces" else 1):
            assert time.monotonic() < deadline, "the program never started"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # let the program itself run (namespace mode: the child of the bootstrap)
        pids = sandbox_pids(marker)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids, time.monotonic() - start

    pids, seconds = asyncio.run(main())
    assert pids and alive(pids) == set(), "the program outlived its cancelled run"
    assert seconds < 1.0

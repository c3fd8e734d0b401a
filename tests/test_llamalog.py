"""llama.cpp's own log lines go to the `ponder.llamacpp` logger at DEBUG, never straight to the terminal; the CLI
shows them with `ponder --verbose`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.backends import llamalog

MODELS = Path(os.environ.get("PONDER_HOME", Path.home() / ".cache" / "ponder")) / "models"
TINY = MODELS / "smollm2-135m.gguf"
SMALL = MODELS / "qwen2.5-coder-0.5b.gguf"
"""Its vocabulary makes llama.cpp warn "control-looking token ... was not control-type" at every load."""


def test_pieces_are_joined_into_lines_and_logged_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="ponder.llamacpp")
    llamalog._on_log(2, b"load: a warning in ", None)
    llamalog._on_log(5, b"two pieces\nand a second line\n", None)  # CONT: continues the line above
    llamalog._on_log(1, b"unfinished", None)
    llamalog._on_log(1, b"a new message\n", None)  # a new message ends the unfinished line
    mine = [r for r in caplog.records if r.name == "ponder.llamacpp"]
    assert [r.getMessage() for r in mine] == ["load: a warning in two pieces", "and a second line", "unfinished",
                                              "a new message"]
    assert {r.levelno for r in mine} == {logging.DEBUG}


def _open_and_close(path: Path) -> None:
    from ponder.backends.llamacpp import LlamaCppBackend

    LlamaCppBackend(path, n_ctx=256, n_threads=1).close()


@pytest.mark.slow
def test_loading_a_model_writes_nothing_to_stderr_and_logs_its_lines(capfd, caplog):
    pytest.importorskip("llama_cpp")
    model = SMALL if SMALL.is_file() else TINY
    if not model.is_file():
        pytest.skip("no model pulled: ponder models pull smollm2-135m")
    _open_and_close(model)
    assert capfd.readouterr().err == ""
    caplog.set_level(logging.DEBUG, logger="ponder.llamacpp")
    _open_and_close(model)
    lines = [r.getMessage() for r in caplog.records if r.name == "ponder.llamacpp"]
    assert any(line.startswith("llama_model_loader:") for line in lines)
    if model == SMALL:
        assert any("control-looking token" in line for line in lines)
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_the_cli_shows_them_only_with_verbose(tmp_path):
    pytest.importorskip("llama_cpp")
    model = SMALL if SMALL.is_file() else TINY
    if not model.is_file():
        pytest.skip("no model pulled: ponder models pull smollm2-135m")

    def ask(*flags: str) -> str:
        args = [*flags, "ask", "What is 2 + 2?", "--model", str(model), "--strategy", "cot", "--max-tokens", "2",
                "--threads", "1", "--json"]
        done = subprocess.run([sys.executable, "-c", "from ponder.cli import app; app()", *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    quiet, verbose = ask(), ask("--verbose")
    assert "llama_model_loader" not in quiet and "control-looking" not in quiet
    assert "ponder.llamacpp: llama_model_loader:" in verbose

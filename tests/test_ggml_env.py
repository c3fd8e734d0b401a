"""The ggml switches ponder sets in its own process (backends/ggml_env.py), and what a child process inherits."""

from __future__ import annotations

import os

import pytest

from ponder.backends import ggml_env
from ponder.errors import InvalidParameter


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ggml_env.TILED_MM, "")  # so that the variable as it was comes back afterwards
    monkeypatch.delenv(ggml_env.TILED_MM)
    monkeypatch.setattr(ggml_env, "_set_here", {})


def test_the_tiled_matmul_is_switched_off_unless_asked_for(fresh: None) -> None:
    assert ggml_env.use_tiled_matmul(False) is False
    assert os.environ[ggml_env.TILED_MM] == "0"
    assert ggml_env.use_tiled_matmul(False) is False  # a second engine with the same setting is fine
    with pytest.raises(InvalidParameter, match="once per process"):
        ggml_env.use_tiled_matmul(True)  # llama.cpp latched "0": saying yes would be a silent no


@pytest.mark.parametrize(("exported", "used"), [("1", True), ("0", False), (" 2x", True), ("off", False)])
def test_an_exported_value_wins_and_is_read_as_llama_cpp_reads_it(
        fresh: None, monkeypatch: pytest.MonkeyPatch, exported: str, used: bool) -> None:
    monkeypatch.setenv(ggml_env.TILED_MM, exported)
    assert ggml_env.use_tiled_matmul(not used) is used  # atoi(value) != 0, whatever the engine asked for
    assert os.environ[ggml_env.TILED_MM] == exported
    assert ggml_env.child_env()[ggml_env.TILED_MM] == exported  # the user's export reaches children too


def test_a_child_process_does_not_inherit_what_ponder_set(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_SOMETHING_ELSE", "kept")
    ggml_env.use_tiled_matmul(False)
    env = ggml_env.child_env()
    assert ggml_env.TILED_MM not in env and env["PONDER_SOMETHING_ELSE"] == "kept"


def test_a_child_ponder_process_uses_what_it_inherits(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ggml_env.tiled_matmul_in_children() is False  # unset: off, ponder's default
    monkeypatch.setenv(ggml_env.TILED_MM, "1")
    assert ggml_env.tiled_matmul_in_children() is True

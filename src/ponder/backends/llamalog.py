"""llama.cpp's own log lines (model loading, "control-looking token ... was not control-type") routed to Python
logging, never straight to the terminal.

llama.cpp prints through one process-wide C callback. `route_llama_logs()` installs ours, which hands each line to
the `ponder.llamacpp` logger at DEBUG, so a command shows them only when asked (`ponder --verbose ...`, or a
handler the caller configures). It replaces llama-cpp-python's callback, which prints to stderr.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("ponder.llamacpp")

_GGML_LOG_LEVEL_CONT = 5
"""ggml_log_level CONT: the text continues the previous line."""



@dataclass
class _Route:
    callback: Any = None
    """The installed ctypes callback, kept referenced here: llama.cpp calls it for the life of the process."""
    partial: str = ""
    """Text of a line not yet ended (llama.cpp sends some lines in pieces)."""


_state = _Route()
_lock = threading.Lock()  # llama.cpp may log from its own threads while the scheduler thread logs too


def _on_log(level: int, text: bytes | None, user_data: Any) -> None:
    piece = (text or b"").decode("utf-8", errors="replace")
    with _lock:
        ended = []
        if level != _GGML_LOG_LEVEL_CONT and _state.partial:  # a new message: the unfinished line is done
            ended.append(_state.partial)
            _state.partial = ""
        *lines, _state.partial = (_state.partial + piece).split("\n")  # the tail waits for its newline
    for line in [*ended, *lines]:
        if line.strip():
            log.debug("%s", line.rstrip())


def route_llama_logs() -> None:
    """Send llama.cpp's log lines to the `ponder.llamacpp` logger (DEBUG); safe to call again."""
    import llama_cpp

    with _lock:
        if _state.callback is not None:
            return
        import llama_cpp._logger  # it installs its own callback on import: ours must come after

        _state.callback = llama_cpp.llama_log_callback(_on_log)
    llama_cpp.llama_log_set(_state.callback, ctypes.c_void_p(0))


def show_llama_logs(handler: logging.Handler | None = None) -> None:
    """Show llama.cpp's lines: the `ponder.llamacpp` logger at DEBUG, with `handler` (default: stderr)."""
    log.setLevel(logging.DEBUG)
    if handler is not None or not log.handlers:
        log.addHandler(handler or logging.StreamHandler())

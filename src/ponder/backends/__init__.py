"""Backends: who generates. See base.py for the protocol."""

from ponder.backends.base import Backend, fan_out
from ponder.backends.scripted import Reply, ScriptedBackend, ScriptedCall

__all__ = ["Backend", "Reply", "ScriptedBackend", "ScriptedCall", "fan_out"]

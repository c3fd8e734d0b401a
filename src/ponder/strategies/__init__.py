"""Strategies: how to spend compute. One file each; see base.py for the protocol."""

from ponder.strategies.base import Strategy, solve

__all__ = ["Strategy", "solve"]

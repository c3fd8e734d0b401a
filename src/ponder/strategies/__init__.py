"""Strategies: how to spend compute. One file each; see base.py for the protocol."""

from ponder.strategies.base import Strategy, at_budget, solve

__all__ = ["Strategy", "at_budget", "solve"]

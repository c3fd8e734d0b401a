"""Verifiers: who judges. See base.py for the protocol."""

from ponder.verifiers.base import CallableVerifier, Verifier, as_verifier

__all__ = ["CallableVerifier", "Verifier", "as_verifier"]

"""ponder's OpenAI-compatible server: the library's strategies behind /v1/chat/completions (needs ponder[server])."""

from ponder.server.app import create_app
from ponder.server.config import Effort, ServerConfig

__all__ = ["Effort", "ServerConfig", "create_app"]

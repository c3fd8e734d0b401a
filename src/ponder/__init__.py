"""ponder: spend more compute at inference time, and measure what it buys."""

from ponder.answers import answer_of, extract_answer, normalize
from ponder.backends import Backend, Reply, ScriptedBackend
from ponder.errors import (
    BudgetExhausted,
    InvalidParameter,
    MissingExtra,
    PonderError,
    UnknownName,
)
from ponder.ledger import Budget, Ledger, Price, PriceTable
from ponder.registry import BACKENDS, STRATEGIES, TASKS, VERIFIERS
from ponder.strategies import Strategy, solve
from ponder.types import (
    Candidate,
    Generation,
    Message,
    ModelInfo,
    Problem,
    Result,
    SamplingParams,
    Score,
    Usage,
)
from ponder.verifiers import Verifier, as_verifier

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "STRATEGIES",
    "TASKS",
    "VERIFIERS",
    "Backend",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "Generation",
    "InvalidParameter",
    "Ledger",
    "Message",
    "MissingExtra",
    "ModelInfo",
    "PonderError",
    "Price",
    "PriceTable",
    "Problem",
    "Reply",
    "Result",
    "SamplingParams",
    "Score",
    "ScriptedBackend",
    "Strategy",
    "UnknownName",
    "Usage",
    "Verifier",
    "__version__",
    "answer_of",
    "as_verifier",
    "extract_answer",
    "normalize",
    "solve",
]

"""Features of one candidate answer, for a scorer learned from the model's own labelled samples.

Two families, kept apart because they are computed at different times:

- **Sample features** come from one generation alone: its token log-probabilities (mean, minimum, spread, the
  last tokens', mean entropy where the full distribution was seen), its length and whether it was cut off. They
  are computed once, when the sample is drawn (or by re-scoring it, see `ponder verifier featurize`), and stored
  with it.
- **Pool features** come from the candidate's company: the share of the pool's votes its answer holds, the share
  of program-aided answers to the same problem that agree with it, and its log-probability rank in the pool. They
  are computed when a pool is scored, from the stored answers, so that a pool of k <= N gets its own.
  The two margins say how its answer fares against the strongest rival answer (in votes, and in program
  agreement): the answers to one problem exclude each other, so a scorer that sees only an answer's own support
  cannot tell a strong answer from one a rival beats.

This module owns the names, the order and the arithmetic; it ignores where the numbers are stored and who learns
from them. Missing values are NaN (a sample drawn without log-probabilities), which the scorers accept.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ponder.types import TokenLogprob

TAIL = 8
"""Tokens at the end of a generation whose log-probabilities are averaged apart: the answer line sits there."""

SAMPLE_FEATURES = ("mean_logprob", "min_logprob", "std_logprob", "tail_logprob", "mean_entropy", "log_tokens",
                   "truncated")
POOL_FEATURES = ("vote_share", "program_agreement", "logprob_rank", "no_answer", "vote_margin", "program_margin")
PROGRAM_FEATURES = frozenset({"program_agreement", "program_margin"})
"""Pool features that need program-aided answers to the same problem."""
HIDDEN_PREFIX = "hidden_"
"""Names of the final hidden state's components: hidden_0, hidden_1, ... (optional, see featurize)."""
NAN = float("nan")


@dataclass(frozen=True)
class SampleFeatures:
    """What one generation says about itself."""

    values: Mapping[str, float]
    """SAMPLE_FEATURES (NaN where unknown), and hidden_i where the final hidden state was read."""

    def get(self, name: str) -> float:
        return float(self.values.get(name, NAN))


def sample_features(logprobs: Sequence[float], truncated: bool, n_tokens: int | None = None,
                    entropies: Sequence[float] = (), hidden: Sequence[float] = ()) -> SampleFeatures:
    """SampleFeatures from a generation's chosen-token log-probabilities (and entropies and hidden state, if read)."""
    n = len(logprobs)
    mean = sum(logprobs) / n if n else NAN
    std = math.sqrt(sum((x - mean) ** 2 for x in logprobs) / n) if n else NAN
    tail = logprobs[-TAIL:]
    values = {
        "mean_logprob": mean,
        "min_logprob": min(logprobs) if n else NAN,
        "std_logprob": std,
        "tail_logprob": sum(tail) / len(tail) if tail else NAN,
        "mean_entropy": sum(entropies) / len(entropies) if entropies else NAN,
        "log_tokens": math.log1p(n_tokens if n_tokens is not None else n),
        "truncated": 1.0 if truncated else 0.0,
    }
    values.update({f"{HIDDEN_PREFIX}{i}": float(h) for i, h in enumerate(hidden)})
    return SampleFeatures(values)


def from_token_logprobs(tokens: Sequence[TokenLogprob] | None, truncated: bool, n_tokens: int) -> SampleFeatures:
    """SampleFeatures of a generation as the engine returned it (log-probabilities only if they were asked for)."""
    return sample_features([t.logprob for t in tokens or ()], truncated, n_tokens)


def pool_features(answers: Sequence[str | None], mean_logprobs: Sequence[float | None],
                  programs: Sequence[str | None] = ()) -> list[dict[str, float]]:
    """POOL_FEATURES of each candidate of one pool (`programs`: program-aided answers to the same problem)."""
    votes = Counter(a for a in answers if a is not None)
    program_votes = Counter(a for a in programs if a is not None)
    known = [lp if lp is not None else -math.inf for lp in mean_logprobs]
    order = sorted(range(len(known)), key=lambda i: -known[i])
    rank = {i: r for r, i in enumerate(order)}
    n = max(1, len(answers))
    rivals = set(votes) | set(program_votes)
    out = []
    for i, a in enumerate(answers):
        own_votes, own_programs = (votes[a], program_votes[a]) if a is not None else (0, 0)
        best_vote = max((votes[b] for b in rivals if b != a), default=0)
        best_program = max((program_votes[b] for b in rivals if b != a), default=0)
        out.append({
            "vote_share": own_votes / n,
            "program_agreement": own_programs / len(programs) if programs and a is not None else NAN,
            "logprob_rank": rank[i] / max(1, n - 1),
            "no_answer": 1.0 if a is None else 0.0,
            "vote_margin": (own_votes - best_vote) / n,
            "program_margin": (own_programs - best_program) / len(programs) if programs else NAN,
        })
    return out


def vector(names: Sequence[str], sample: SampleFeatures, pool: Mapping[str, float]) -> list[float]:
    """The values of `names`, in order, from a candidate's sample and pool features (NaN where absent)."""
    return [float(pool[name]) if name in pool else sample.get(name) for name in names]

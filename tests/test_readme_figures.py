"""Every benchmark figure the README quotes is the one the committed JSON holds (formatted by benchmarks/figures.py)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def figures():
    spec = importlib.util.spec_from_file_location("figures", ROOT / "benchmarks" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["engine.json", "server.json", "ray.json", "quality.json", "verifier.json",
                                  "profile.json", "search.json", "open.json", "peer.json", "peer_width1.json",
                                  "tiled.json"])
def test_the_readme_quotes_the_committed_benchmark(name):
    blocks = figures().blocks()
    assert name in blocks, f"benchmarks/results/{name} is missing"
    readme = (ROOT / "README.md").read_text()
    assert blocks[name] in readme, f"the README's figures from {name} differ from the JSON; run " \
                                   f"benchmarks/figures.py and paste its block:\n{blocks[name]}"

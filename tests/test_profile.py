"""`ponder profile`: per-step costs, the step-time model and its validation, what-if hardware, the document, bad
input, and the engine's step trace on the real tiny model."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.backends.steptrace import StepRecord
from ponder.compute import KVCacheType
from ponder.errors import InvalidParameter
from ponder.profiling.ceilings import Ceilings
from ponder.profiling.cost import kv_bytes_per_cell, kv_crossover_context, step_cost, weight_bytes
from ponder.profiling.hardware import HARDWARE, Hardware, load_hardware
from ponder.profiling.predict import Efficiency, StepModel, fit_step_model, validate, what_if
from ponder.profiling.profile import ProfileError, build_profile, records
from ponder.types import ModelInfo

INFO = ModelInfo(name="m", n_params=500_000_000, n_layers=24, d_model=896, n_heads=14, n_kv_heads=2, head_dim=64,
                 bytes_per_param=0.6, n_ctx_train=32768)
CEILINGS = Ceilings(memory_bandwidth=30e9, flops=100e9, threads=2, seconds=1.0)
MODEL = Path(os.environ.get("PONDER_HOME", Path.home() / ".cache" / "ponder")) / "models" / "smollm2-135m.gguf"


def _step(width: int, context: int, prefill: int = 0, seconds: float = 0.01) -> StepRecord:
    """`width` samples forked from one prompt, `context` tokens each: they share all but their last 32 cells."""
    return StepRecord(start=0.0, width=width, prefill_tokens=prefill, context_sum=width * context,
                      context_max=context, prefill_context_sum=prefill * (prefill - 1) // 2,
                      prefill_kv_tokens=prefill, kv_cells=context + 32 * max(0, width - 1) + prefill,
                      decode_s=seconds * 0.9,
                      sample_s=seconds * 0.06, other_s=seconds * 0.04)


def test_a_steps_bytes_are_the_weights_once_plus_each_sequences_kv() -> None:
    per_cell = 2 * 24 * 2 * 64 * 2.0
    assert kv_bytes_per_cell(INFO, KVCacheType.F16) == per_cell
    assert kv_bytes_per_cell(INFO, KVCacheType.Q8_0) == pytest.approx(per_cell * 34 / 64)
    one, eight = step_cost(_step(1, 1000), INFO, KVCacheType.F16), step_cost(_step(8, 1000), INFO, KVCacheType.F16)
    assert one.weight_bytes == eight.weight_bytes == weight_bytes(INFO) == 3e8  # shared by the batch
    assert eight.kv_bytes == pytest.approx(8 * one.kv_bytes, rel=1e-3)
    assert eight.flops > 7.9 * one.flops and eight.intensity > 5 * one.intensity  # batching buys intensity
    assert one.decode_flops == 2 * INFO.n_params and one.prefill_flops == 0
    assert one.decode_attention_flops == 2 * 24 * 14 * 64 * 1000
    # in the unified KV cache each decoded token's attention runs over every cell in use: cached prefixes too
    held = step_cost(replace(_step(2, 1000), kv_cells=5000), INFO, KVCacheType.F16)
    assert held.decode_attention_flops == 2 * 24 * 14 * 64 * 2 * 5000
    chunk = step_cost(_step(0, 0, prefill=512), INFO, KVCacheType.F16)
    assert chunk.prefill_flops == 512 * 2 * INFO.n_params and chunk.decode_flops == 0
    # where KV reads pass the weights': 300 MB / (8 sequences x 12 KB a cell)
    assert kv_crossover_context(INFO, KVCacheType.F16, 8) == pytest.approx(3e8 / (8 * per_cell))
    assert kv_crossover_context(INFO, KVCacheType.Q4_0, 8) > kv_crossover_context(INFO, KVCacheType.F16, 8)


def _truth(host: float = 0.001) -> StepModel:
    """Weights streamed at 25 GB/s, KV at 25 GB/s, decode matmuls at 80 GFLOP/s, prefill at 200, attention at 10."""
    return StepModel(constant_s=3e8 / 25e9 + host, host_s=host, weight_bytes=3e8,
                     rates=(1 / 25e9, 1 / 80e9, 1 / 200e9, 1 / 10e9, 1 / 10e9))


def _synthetic(truth: StepModel, n: int = 300, stalls: int = 6, seed: int = 0) -> list[StepRecord]:
    rng = random.Random(seed)
    steps = []
    for i in range(n):
        width, context = rng.choice([1, 2, 4, 8, 16]), rng.choice([128, 1024, 2048, 4096])
        draft = _step(width, context)
        t = truth.seconds(step_cost(draft, INFO, KVCacheType.F16)) * rng.uniform(0.97, 1.03)
        if i < stalls:
            t *= 20  # the shared machine stalled this step
        steps.append(_step(width, context, seconds=t))
    return steps


def test_host_time_is_measured_and_the_rest_of_the_constant_is_the_weights() -> None:
    steps = _synthetic(_truth(host=0.0))
    fitted = fit_step_model(steps, [step_cost(s, INFO, KVCacheType.F16) for s in steps])
    assert fitted.host_s == pytest.approx(statistics.median(s.sample_s + s.other_s for s in steps))
    assert fitted.weight_bandwidth == pytest.approx(3e8 / (fitted.constant_s - fitted.host_s))


def test_the_step_model_is_recovered_and_validated_despite_stalls() -> None:
    truth = _truth()
    steps = _synthetic(truth)
    costs = [step_cost(s, INFO, KVCacheType.F16) for s in steps]
    fitted = fit_step_model(steps, costs)
    assert fitted.constant_s == pytest.approx(truth.constant_s, rel=0.1)
    assert fitted.achieved("decode_flops") == pytest.approx(80e9, rel=0.1)
    # KV bytes and decode attention both grow with the context alone: the fit may give either the time
    cell, attended = kv_bytes_per_cell(INFO, KVCacheType.F16), 2 * 24 * 14 * 64  # per context token
    per_token = fitted.rates[0] * cell + fitted.rates[3] * attended
    assert per_token == pytest.approx(cell / 25e9 + attended / 10e9, rel=0.1)
    report = validate(steps, costs)
    assert report["relative_error"]["median"] < 0.03
    assert set(report["by_width"]) == {"1-1", "2-3", "4-7", "8-15", "16-16"}
    assert report["by_context"]["4096+"]["n"] > 0


def test_what_if_names_the_binding_ceiling_and_what_does_not_fit() -> None:
    costs = [step_cost(_step(1, 512), INFO, KVCacheType.F16)] * 10
    half = Efficiency(bandwidth=0.5, flops=0.5)
    h200 = what_if(HARDWARE["h200"], half, 0.0, costs, decoded_tokens=10, peak_bytes=1e9, solved=5)
    assert h200.binding == "memory bandwidth"  # width 1: a few FLOPs per byte, far below the ridge
    # at half its bandwidth ceiling here, the engine is taken to read at half the H200's too: 2.4 TB/s
    assert h200.seconds == pytest.approx(sum(c.bytes for c in costs) / 2.4e12)
    wide = [step_cost(_step(256, 16), INFO, KVCacheType.F16)] * 10  # many short sequences: FLOPs, not KV
    assert what_if(HARDWARE["l4"], half, 0.0, wide, 2560, 1e9).binding == "compute"  # past the L4's ridge
    hosted = what_if(HARDWARE["h200"], half, 0.01, costs, 10, 1e9)
    assert hosted.binding == "host"  # 10 ms of Python a step is carried over: it dwarfs the H200's reads
    assert h200.usd_per_solved == pytest.approx(h200.usd / 5)
    tiny = Hardware("tiny", 1e9, 1e9, memory_bytes=1e8, usd_per_hour=1.0)
    assert not what_if(tiny, half, 0.0, costs, 10, peak_bytes=1e9).fits_in_memory


def test_efficiency_is_the_best_share_of_the_ceilings_reached() -> None:
    steps = [_step(1, 512, seconds=0.02), _step(8, 512, seconds=0.1)]
    costs = [step_cost(s, INFO, KVCacheType.F16) for s in steps]
    eff = Efficiency.of(steps, costs, CEILINGS)
    best_bw = max(c.bytes / s.decode_s for s, c in zip(steps, costs, strict=True))
    assert eff.bandwidth <= min(1.0, best_bw / CEILINGS.memory_bandwidth) and 0 < eff.flops <= 1


def test_the_profile_document_is_complete_json_and_its_shares_add_up() -> None:
    truth = _truth()
    steps = [_step(4, 256, prefill=100, seconds=0.2), *_synthetic(truth, n=60, stalls=0)]
    doc = build_profile(steps, INFO, KVCacheType.F16, CEILINGS, [HARDWARE["h200"]], solved=2,
                        source={"kind": "test"})
    text = json.dumps(doc, allow_nan=False)  # strict JSON: a hardware team's parser must read it
    assert json.loads(text)["format"] == "ponder-profile/1"
    assert sum(doc["totals"]["share"].values()) == pytest.approx(1.0)
    assert doc["totals"]["decoded_tokens"] == sum(s.width for s in steps)
    assert doc["kv_cells"]["peak"] == max(s.kv_cells for s in steps)
    assert len(doc["steps"]) == len(steps) and {"flops", "kv_bytes", "intensity"} <= set(doc["steps"][0])
    assert doc["host_share_by_width"]["4"] == pytest.approx(0.1)  # sample 6% + other 4% of each step
    copying = replace(steps[1], cache_s=steps[1].seconds)  # a step that also copied out as long as it decoded
    copied = build_profile([steps[0], copying, *steps[2:]], INFO, KVCacheType.F16, CEILINGS)
    share = copied["totals"]["share"]
    assert sum(share.values()) == pytest.approx(1.0) and share["cache_copies"] > 0
    assert copied["host_share_by_width"][str(copying.width)] < 0.1  # copies are not sampling or Python
    assert doc["what_if"][0]["hardware"] == "h200" and doc["what_if"][0]["usd_per_solved"] is not None


def test_steps_that_are_not_step_records_are_refused() -> None:
    good = {k: v for k, v in asdict(_step(1, 10)).items()}
    assert records([good], "x")[0].width == 1
    older = {k: v for k, v in good.items() if k != "cache_s"}  # written before the host cache's copies were timed
    assert records([older], "runs/older")[0].cache_s == 0.0
    with pytest.raises(ProfileError, match="not a step record"):
        records([{**good, "extra": 1}], "runs/old")
    with pytest.raises(ProfileError, match="decoded nothing"):
        build_profile([], INFO, KVCacheType.F16, CEILINGS)


def test_hardware_files_are_read_and_bad_ones_named(tmp_path) -> None:
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"name": "mine", "memory_bandwidth": 1e11, "flops": 1e13, "memory_bytes": 3.2e10,
                                "usd_per_hour": 0.4}))
    assert load_hardware(str(path)).name == "mine"
    path.write_text(json.dumps({"name": "mine", "memory_bandwidth": -1, "flops": 1e13, "memory_bytes": 1,
                                "usd_per_hour": 1}))
    with pytest.raises(InvalidParameter, match="memory_bandwidth must be a positive number"):
        load_hardware(str(path))
    with pytest.raises(InvalidParameter, match="h200"):
        load_hardware("no-such-gpu")


runner = CliRunner()


def _cli(*args):
    """exit code and the output as one line (Rich wraps long messages)."""
    from ponder.cli import app

    result = runner.invoke(app, [*map(str, args)])
    return result.exit_code, " ".join(result.output.split())


def test_profile_of_an_unprofiled_run_or_garbage_is_a_clear_error(tmp_path) -> None:
    from sweep_helpers import write_task

    task = write_task(tmp_path, 2)
    assert _cli("sweep", "--task", task, "--model", "scripted", "--budgets", "1", "--out", tmp_path / "r")[0] == 0
    code, out = _cli("profile", tmp_path / "r", "--out", tmp_path / "p")
    assert code == 2 and "no step trace" in out and "ponder sweep ... --profile" in out
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "store.sqlite").write_bytes(b"not a database at all" * 100)
    code, out = _cli("profile", tmp_path / "g", "--out", tmp_path / "p")
    assert code == 2 and "not a ponder store" in out
    code, out = _cli("profile", "--out", tmp_path / "p")
    assert code == 2 and "--model" in out
    code, out = _cli("profile", "--model", "scripted", "--out", tmp_path / "p")
    assert code == 2 and "local model" in out
    code, out = _cli("sweep", "--task", task, "--model", "scripted", "--budgets", "1", "--profile", "--out",
                     tmp_path / "s")
    assert code == 2 and "sweep a local model" in out and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_the_engine_records_every_step_of_a_real_model() -> None:
    assert MODEL.is_file(), "smollm2-135m is missing: make test pulls it (ponder models pull smollm2-135m)"
    from ponder.backends.factory import open_backend
    from ponder.types import Message, SamplingParams

    backend = open_backend(str(MODEL), trace=True, kv_cache_type="q8_0")
    try:
        gens = asyncio.run(backend.generate([Message("user", "Count from 1 to 30.")],
                                            SamplingParams(n=4, max_tokens=24, temperature=0.8, seed=1)))
        steps = backend.steps.take()
    finally:
        backend.close()
    assert backend.kv_cache_type == KVCacheType.Q8_0
    assert sum(s.width for s in steps) == sum(g.completion_tokens for g in gens)  # every decoded token, once
    assert max(s.width for s in steps) == 4 and steps[0].prefill_tokens > 0  # the prompt, then 4 samples together
    assert all(s.decode_s > 0 and s.sample_s >= 0 and s.other_s >= 0 for s in steps)
    # the 4 finished samples copied out to the host prefix cache: timed as cache_s, apart from sampling
    assert steps[-1].cache_s > 0 and sum(s.cache_s for s in steps) == pytest.approx(backend.stats["cache_copy_seconds"])
    widest = [s for s in steps if s.width == 4]
    assert widest[-1].context_max > widest[0].context_max  # contexts grow as the samples decode
    # the cells each step attended over: the shared prompt once, plus every running sample's own
    assert [s.kv_cells for s in widest] == [steps[0].prefill_tokens + 4 * (i + 1) for i in range(len(widest))]
    assert steps[-1].kv_cells == steps[0].prefill_tokens + steps[-1].width * max(g.completion_tokens for g in gens)
    assert not math.isnan(sum(s.seconds for s in steps))


def test_a_kv_cache_type_is_refused_where_the_engine_is_not_ponders(tmp_path) -> None:
    from ponder.backends.factory import open_backend

    with pytest.raises(InvalidParameter, match="applies to a local model"):
        open_backend("scripted", kv_cache_type=KVCacheType.Q4_0)
    with pytest.raises(InvalidParameter, match="applies to a local model"):
        open_backend("http://localhost:9/v1#m", trace=True)
    code, out = _cli("ask", "What is 2+2?", "--model", "scripted", "--kv-cache-type", "q8_0")
    assert code == 2 and "kv_cache_type='q8_0'" in out
    code, out = _cli("serve", "--model", "scripted", "--upstream", "http://localhost:9/v1", "--kv-cache-type", "q4_0")
    assert code != 0 and "kv-cache-type" in out
    assert open_backend("scripted", kv_cache_type="f16") is not None  # the default is no request at all

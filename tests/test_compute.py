"""FLOPs and bytes moved: the closed forms against brute-force sums, and the report against its parts."""

import pytest

from ponder.compute import (
    ComputeReport,
    bytes_moved,
    bytes_per_decoded_token,
    flops,
    flops_per_token,
    sequence_flops,
    usage_flops,
)
from ponder.ledger import Price, PriceTable
from ponder.types import ModelInfo, Result, Usage

INFO = ModelInfo(name="toy", n_params=1_000_000, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16,
                 bytes_per_param=0.5)
# Qwen2.5-0.5B's shapes: 24 layers, 14 query heads and 2 KV heads of 64 dims.
QWEN_05B = ModelInfo(name="qwen0.5b", n_params=494_032_768, n_layers=24, d_model=896, n_heads=14, n_kv_heads=2,
                     head_dim=64, bytes_per_param=0.6)


def test_flops_per_token_is_2n_plus_the_attention_term():
    assert flops_per_token(INFO, 0) == 2_000_000
    assert flops_per_token(INFO, 100) == 2_000_000 + 2 * 2 * 100 * 64
    # a 0.5B model: about 1 GFLOP per token, attention adding ~4% at a 1k context
    assert flops_per_token(QWEN_05B, 0) == pytest.approx(0.988e9, rel=1e-3)
    assert flops_per_token(QWEN_05B, 1000) / flops_per_token(QWEN_05B, 0) == pytest.approx(1.0435, abs=1e-3)


def test_sequence_flops_equals_the_sum_over_positions():
    prompt, completion, cached = 37, 21, 5
    brute = sum(flops_per_token(INFO, t) for t in range(cached, prompt))
    brute += sum(flops_per_token(INFO, t) for t in range(prompt, prompt + completion))
    assert sequence_flops(INFO, prompt, completion, cached) == pytest.approx(brute)


def test_usage_flops_estimates_one_sequence_closely_and_skips_cached_prefill():
    prefill, decode = usage_flops(INFO, Usage(prompt_tokens=200, completion_tokens=300, calls=1))
    assert prefill + decode == pytest.approx(sequence_flops(INFO, 200, 300), rel=1e-3)
    cached_prefill, _ = usage_flops(INFO, Usage(prompt_tokens=200, completion_tokens=300, cached_tokens=150, calls=1))
    assert cached_prefill == pytest.approx(prefill * 50 / 200)


def test_flops_of_usage_by_role_is_the_sum_of_the_roles():
    policy, verifier = Usage(100, 400, calls=2), Usage(50, 10, calls=1)
    total = flops(INFO, {"policy": policy, "verifier": verifier})
    assert total == pytest.approx(flops(INFO, policy) + flops(INFO, verifier))
    assert total > 2 * INFO.n_params * (100 + 400 + 50 + 10)


def test_bytes_per_decoded_token_reads_the_weights_and_the_kv_cache():
    weights = 1_000_000 * 0.5
    kv_per_position = 2 * 2 * 2 * 16 * 2.0  # K and V, layers, kv heads, head_dim, f16 bytes
    assert bytes_per_decoded_token(INFO, 0) == weights
    assert bytes_per_decoded_token(INFO, 100) == weights + 100 * kv_per_position
    assert bytes_per_decoded_token(INFO, 100, batch=4) == weights / 4 + 100 * kv_per_position
    one = Usage(prompt_tokens=10, completion_tokens=20, calls=1)
    assert bytes_moved(INFO, one) == 20 * bytes_per_decoded_token(INFO, 20)


def test_compute_report_adds_up_and_prices_tokens():
    result = Result(answer="1", text="", strategy="x", usage_by_role={
        "policy": Usage(100, 400, calls=1, seconds=2.0), "verifier": Usage(80, 4, calls=1, seconds=1.0)})
    prices = PriceTable({"toy": Price(1.0, 0.5, 2.0)})
    report = ComputeReport.of(result, INFO, prices)
    assert report.prompt_tokens == 180 and report.completion_tokens == 404 and report.seconds == 3.0
    assert report.flops == pytest.approx(report.prefill_flops + report.decode_flops)
    assert report.flops == pytest.approx(sum(report.flops_by_role.values()))
    assert report.usd == pytest.approx((180 * 1.0 + 404 * 2.0) / 1e6)
    assert ComputeReport.of(result, INFO, usd=0.25).usd == 0.25
    assert report.to_dict()["flops"] == report.flops

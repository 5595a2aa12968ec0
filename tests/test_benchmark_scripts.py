"""Smoke tests of the benchmark scripts (``benchmarks/``), so they keep running as the library changes."""

from __future__ import annotations

import importlib.util
import json
import re

from conftest import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inference_speed_smoke(capsys, tmp_path, one_thread):
    """``--tiny``: hidden 32, 2 layers, batch 1 x 16, one repeat, rows fp32, ternary and the free-Linear bound,
    in-process."""
    bench = _load("inference_speed")
    out_file = tmp_path / "speed.json"
    assert bench.main(["--tiny", "--output", str(out_file)]) == 0
    out = capsys.readouterr().out

    number = r"\d+(?:\.\d+)?(?:e[-+]?\d+)?"
    for label in ("transformers fp32 (sdpa)", "bitesm ternary, latent fp32 weights"):
        row = re.search(rf"^\| tiny \| {re.escape(label)} \| 1 x 16 \| ({number}) \| ({number}) \| 1 \|", out, re.M)
        assert row, f"no measured row for {label!r} in:\n{out}"
        assert float(row.group(1)) > 0
    for kind in ("fp32 F.linear", "bf16 F.linear", "int8 torch._int_mm"):
        assert re.search(rf"^\| {re.escape(kind)} \| 16 x 32 x 64 \| {number} \|", out, re.M), out
    for precision in ("fp32", "bf16"):
        assert re.search(rf"^\| tiny \| {precision} \| 1 x 16 \| {number} \(n=1\) \| {number} \(n=1\) \| {number} \|",
                         out, re.M), out

    report = json.loads(out_file.read_text())
    assert {e["row"] for e in report["forward"]} == {"fp32", "ternary", "free-linear"}
    assert all("error" not in e and e["tokens_per_s"] > 0 and "fraction_of_peak" in e for e in report["forward"])
    assert set(report["gemm"]["peaks"]) >= {"fp32", "bf16", "int8"}
    assert [t["precision"] for t in report["train"]] == ["fp32", "bf16"] and all("ratio" in t for t in report["train"])
    # the bound row has no encoder Linear left, and keeps everything else
    free, _ = bench._build("free-linear", "tiny", "cpu", None)
    assert bench._encoder_linears(free) == [] and free.lm_head.dense.out_features == 32
    assert free(input_ids=bench._tokens(1, 8, "cpu")).logits.shape == (1, 8, 33)
    # ops per token of the 8M shape at 512 tokens: 6 layers x (2 (4 h^2 + 2 h ffn) + 4 T h), h 320, ffn 1280
    assert bench.ops_per_token("8M", 512) == 6 * (2 * (4 * 320**2 + 2 * 320 * 1280) + 4 * 512 * 320)


def test_inference_speed_failing_rows_are_printed_and_the_run_goes_on(capsys, monkeypatch):
    """A row that fails prints its error in the table (a missing implementation as "not available")."""
    bench = _load("inference_speed")

    def broken_build(row, *args):
        if row == "packed":
            raise bench.NotAvailable("bitesm.models.packed: no module")
        raise RuntimeError("boom")

    monkeypatch.setattr(bench, "_build", broken_build)
    assert bench.main(["--tiny", "--rows", "fp32,packed", "--gemm", "off", "--train-shapes", "none"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| tiny \| transformers fp32 \(sdpa\) \| 1 x 16 \| RuntimeError: boom \|", out, re.M), out
    assert re.search(r"^\| tiny \| bitesm ternary 2-bit packed \| 1 x 16 \| not available \(bitesm.models.packed",
                     out, re.M), out


def test_cpu_inference_smoke(capsys):
    """``--smoke`` without the esm.cpp rows (no network): tiny shape, 8 proteins, each row in its own subprocess."""
    bench = _load("cpu_inference")
    assert bench.main(["--smoke", "--rows", "hf-fp32,packed", "--workloads", "proteins", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^- Flags: AVX2 (yes|no), AVX-512 VNNI (yes|no), AVX-512 BF16 (yes|no), AMX (yes|no)", out,
                     re.M) or "torch CPU capability" in out, out
    number = r"\d+(?:\.\d+)?"
    for label in ("transformers EsmForMaskedLM fp32", "bitesm packed ternary"):
        row = re.search(rf"^\| smoke \| 8 proteins \| {re.escape(label)} \| ({number}) \| ({number}) \| ({number}) \| "
                        rf"({number})x \|", out, re.M)
        assert row, f"no measured row for {label!r} in:\n{out}"
        assert float(row.group(1)) > 0 and float(row.group(2)) >= 1 and float(row.group(3)) > 0
    assert re.search(r"^\| smoke \| 8 proteins \| transformers EsmForMaskedLM fp32 \| .* \| 1\.00x \|$", out, re.M)

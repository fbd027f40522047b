"""benchmarks/kv_cache_cpu.py runs end to end on the small shape and writes its record atomically."""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kv_cache_benchmark_reports_identical_tokens(tmp_path, monkeypatch, capsys):
    out = tmp_path / "kv.json"
    monkeypatch.setattr(sys, "argv", ["kv_cache_cpu.py", "--shape", "lab", "--new-tokens", "8", "40",
                                      "--positions", "4", "32", "--out", str(out)])
    runpy.run_path(str(ROOT / "benchmarks" / "kv_cache_cpu.py"), run_name="__main__")
    record = json.loads(out.read_text())
    assert [r["new_tokens"] for r in record["rows"]] == [8, 40]
    assert all(r["same_tokens"] and r["cached_tok_s"] > 0 and r["uncached_tok_s"] > 0 for r in record["rows"])
    assert record["per_position"]["positions"] == [4, 32] and len(record["per_position"]["cached_s"]) == 2
    assert record["parameters"] > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("new_tokens=")]
    assert len(lines) == 2 and "same_tokens=True" in lines[1]
    assert not (tmp_path / "kv.tmp").exists()

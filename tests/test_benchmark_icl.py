"""benchmarks/icl_sweep.py runs end to end on a short grid and writes its table atomically."""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_writes_one_row_per_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep.json"
    monkeypatch.setattr(sys, "argv", ["icl_sweep.py", "--set", "steps=20", "mlp=gelu", "--values", "0.02", "0.04",
                                      "--seeds", "0", "--out", str(out)])
    runpy.run_path(str(ROOT / "benchmarks" / "icl_sweep.py"), run_name="__main__")
    rows = json.loads(out.read_text())["rows"]
    assert [r["muon_lr"] for r in rows] == [0.02, 0.04] and all(r["steps"] == 20 for r in rows)
    assert all(r["mlp"] == "gelu" for r in rows)
    for r in rows:
        assert 0 <= r["seen_8plus"] <= 1 and 0 <= r["induction"] <= 1 and r["seconds"] > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("muon_lr=")]
    assert len(lines) == 2 and "seen_8plus=" in lines[0]
    assert not (tmp_path / "sweep.tmp").exists()


def test_sweep_rejects_an_unknown_field(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["icl_sweep.py", "--set", "depth=3"])
    try:
        runpy.run_path(str(ROOT / "benchmarks" / "icl_sweep.py"), run_name="__main__")
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown recipe field must be refused")

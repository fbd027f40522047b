"""benchmarks/gpu.py's code paths at toy sizes on the CPU (``--device cpu --quick``): the record it writes, and the
refusals that keep it from timing a GPU benchmark on a CPU."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["gpu.py", *argv])
    runpy.run_path(str(ROOT / "benchmarks" / "gpu.py"), run_name="__main__")


def test_quick_cpu_run_writes_its_record(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu.json"
    run(monkeypatch, "--device", "cpu", "--quick", "--only", "gpt2", "triton", "--out", str(out))
    record = json.loads(out.read_text())
    gpt2 = record["gpt2"]
    assert record["device"] == "cpu" and record["quick"] is True
    assert gpt2["tokens_per_s"] > 0 and gpt2["mfu"] is None and gpt2["peak_flops"] is None  # no data-sheet peak
    assert gpt2["flops_per_token"] > 6 * 2 * 64 * 64 * 4  # at least the blocks' matmuls
    assert 3.5 < gpt2["final_loss"] < 5.0  # random tokens over 65: about ln 65 = 4.17
    if "rows" in record["triton"]:
        assert all(r["max_diff_triton"] < 1e-4 and r["triton_ms"] > 0 for r in record["triton"]["rows"])
    assert "gpt2:" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_what_it_cannot_measure(monkeypatch):
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        run(monkeypatch, "--only", "gpt2")
    with pytest.raises(SystemExit, match="add --quick"):
        run(monkeypatch, "--device", "cpu", "--only", "gpt2")

"""benchmarks/ddpm_mnist_cpu.py runs end to end at tiny settings and writes its record (and PNG) atomically."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ddpm_mnist_benchmark_writes_its_record(tmp_path, monkeypatch, capsys):
    out = tmp_path / "mnist.json"
    monkeypatch.setattr(sys, "argv", ["ddpm_mnist_cpu.py", "--max-seconds", "2", "--steps", "3", "--batch-size", "8",
                                      "--base-channels", "8", "--samples", "10", "--ddpm-samples", "0",
                                      "--scales", "0", "2", "--judge-steps", "20", "--out", str(out)])
    runpy.run_path(str(ROOT / "benchmarks" / "ddpm_mnist_cpu.py"), run_name="__main__")
    record = json.loads(out.read_text())
    assert [(r["sampler"], r["w"]) for r in record["rows"]] == [("DDIM-50", 0.0), ("DDIM-50", 2.0)]
    assert all(0 <= r["accuracy"] <= 1 and r["frechet"] > 0 and r["n"] == 10 for r in record["rows"])
    assert 1 <= record["steps"] <= 3 and record["params"] > 0 and 0 <= record["judge_accuracy"] <= 1
    assert out.with_suffix(".png").is_file() and not list(tmp_path.glob("*.tmp*"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sampler=")]
    assert len(lines) == 2 and "w=2.0" in lines[1]


def test_mnist_5k_loads_as_500_digits_of_each_class():
    from labkit.data import load_mnist_5k

    images, labels = load_mnist_5k()
    assert images.shape == (5000, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert labels.bincount().tolist() == [500] * 10
    assert images.mean() == pytest.approx(0.13, abs=0.02)  # MNIST's mean intensity

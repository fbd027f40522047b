"""``python -m labkit.scripts.pipeline``: GPipe on 2 gloo processes (``torch.distributed.pipelining``) trains like
one process, in float64 to 1e-10."""

import json
import os
import subprocess
import sys

import pytest


def run(out, *launcher):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *launcher, "-m", "labkit.scripts.pipeline", "--steps", "5", "--batch-size", "8", "--microbatches",
           "4", "--n-layers", "2", "--d-model", "32", "--context-length", "32", "--dtype", "float64", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((out / "history.json").read_text())


def test_two_stages_train_like_one_process(tmp_path):
    one = run(tmp_path / "one")
    two = run(tmp_path / "two", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["loss"][-1] < one["loss"][0] - 0.1  # it learns
    assert one["loss"] == pytest.approx(two["loss"], abs=1e-10, rel=0)
    # each stage holds its share of the weights, and together all of them
    assert sum(two["parameters_per_rank"]) == one["parameters_per_rank"][0]
    assert min(two["parameters_per_rank"]) > 0.3 * one["parameters_per_rank"][0]

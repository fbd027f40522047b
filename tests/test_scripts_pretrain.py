"""``python -m labkit.scripts.pretrain`` under ``torchrun --nproc_per_node 2`` (gloo, CPU) gives the loss curve and the
weights of one process with the same (doubled) global batch, and its checkpoint loads in a single process; with
``--strategy fsdp`` the same losses with half the bytes per rank, and a gathered checkpoint."""

import json
import os
import subprocess
import sys

import pytest
import torch

from labkit.recipes import parse_overrides
from labkit.recipes.gpt_shakespeare import LAB, build_lm
from labkit.train import load_checkpoint

TINY = ["--steps", "4", "--batch-size", "8", "--log-every", "1", "--eval-tokens", "2000",
        "--set", "n_layers=1", "--set", "d_model=32", "--set", "n_heads=2", "--set", "context_length=32", "--set", "warmup_steps=1",
        "--set", "optimizer=adamw"]  # AdamW in float32 (the recipe's Muon may orthogonalise in bfloat16 on some CPUs)


def run(out, *launcher, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_PROGRESS": "off"}
    cmd = [sys.executable, *launcher, "-m", "labkit.scripts.pretrain", *TINY, *extra, "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((out / "history.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pretrain")
    one = run(base / "one")
    two = run(base / "two", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    return base, one, two


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("fsdp")
    return base, run(base, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     extra=("--strategy", "fsdp"))


def test_fsdp_gives_the_same_losses_with_half_the_bytes_per_rank(runs, fsdp_run):
    _, one, two = runs
    base, fsdp = fsdp_run
    assert fsdp["strategy"] == "fsdp" and two["strategy"] == "ddp"
    assert fsdp["train_loss"] == pytest.approx(two["train_loss"], abs=1e-5)
    assert fsdp["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    full = two["memory"][0]
    assert full["optimizer"] == 2 * full["parameters"] == 2 * full["gradients"] > 0  # AdamW: two moments
    assert one["memory"][0] == full  # DDP keeps a whole copy on each rank
    for part in ("parameters", "gradients", "optimizer"):
        shards = [m[part] for m in fsdp["memory"]]
        assert sum(shards) == full[part]  # every element on exactly one rank
        assert max(shards) - min(shards) < 0.02 * full[part]  # about half each (odd rows split unevenly)
    # the gathered checkpoint is a plain state dict with the DDP run's weights
    recipe = parse_overrides(LAB, ["n_layers=1", "d_model=32", "n_heads=2", "context_length=32", "optimizer=adamw"])
    sharded, replicated = build_lm(recipe, 65), build_lm(recipe, 65)
    load_checkpoint(base / "checkpoint.pt", sharded)
    load_checkpoint(runs[0] / "two" / "checkpoint.pt", replicated)
    for (name, p), q in zip(sharded.state_dict().items(), replicated.state_dict().values()):
        diff = (p - q).abs()
        assert (diff > 1e-5).double().mean() < 0.01 and diff.max() < 1e-3, name


def test_fsdp_refuses_muon_with_a_reason():
    done = subprocess.run([sys.executable, "-m", "labkit.scripts.pretrain", "--strategy", "fsdp", "--steps", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--set optimizer=adamw" in done.stderr


def test_two_processes_give_the_loss_curve_of_one(runs):
    _, one, two = runs
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["steps_logged"] == two["steps_logged"] == [1, 2, 3, 4]
    assert one["train_loss"][-1] < one["train_loss"][0] - 0.3  # it learns
    assert one["train_loss"] == pytest.approx(two["train_loss"], abs=1e-5)
    assert one["val_loss"] == pytest.approx(two["val_loss"], abs=1e-5)


def test_checkpoints_load_in_one_process_and_agree(runs):
    base, _, _ = runs
    recipe = parse_overrides(LAB, ["n_layers=1", "d_model=32", "n_heads=2", "context_length=32", "optimizer=adamw"])
    models = {}
    for name in ("one", "two"):
        models[name] = build_lm(recipe, 65)
        load_checkpoint(base / name / "checkpoint.pt", models[name])  # weights_only=True; no DDP "module." prefix
    fresh = build_lm(recipe, 65).state_dict()
    one, two = models["one"].state_dict(), models["two"].state_dict()
    for key, p in two.items():
        assert not torch.equal(one[key], fresh[key]), key  # it trained
        # the same weights, up to the order in which the two halves' gradients are summed: AdamW divides by the
        # root of the squared gradients, so an element whose gradient is near zero can move by up to ~1e-4
        diff = (p - one[key]).abs()
        assert (diff > 1e-5).double().mean() < 0.01 and diff.max() < 1e-3, key

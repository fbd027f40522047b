"""The training loop: it learns, schedules, clips, accumulates, decays the right parameters, checkpoints,
resumes exactly, and stops early on request or on a time budget."""

import math
import time
from typing import NamedTuple

import pytest
import torch
from torch import nn

from labkit.train import (History, TrainConfig, default_loss, load_checkpoint, make_optimizer, save_checkpoint,
                          train, warmup_cosine)


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 4, generator=g)
    w = torch.tensor([1.5, -2.0, 0.5, 3.0])
    y = (X @ w).unsqueeze(1) + 0.01 * torch.randn(512, 1, generator=g)
    return X, y


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.1), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x, y):
        pred = self.net(x)
        return pred, nn.functional.mse_loss(pred, y)


def _get_batch(X, y):
    def get_batch(step):  # uses the global RNG on purpose: resuming must restore it
        idx = torch.randint(len(X), (32,))
        return X[idx], y[idx]
    return get_batch


def _eval(X, y):
    return lambda model: model(X, y)[1].item()


def test_loss_goes_down():
    torch.manual_seed(0)
    X, y = _problem()
    model = Regressor()
    initial = _eval(X, y)(model.eval())
    hist = train(model, _get_batch(X, y), TrainConfig(max_steps=200, lr=1e-2, warmup_steps=10, eval_every=50,
                                                       log_every=10, progress=False), eval_fn=_eval(X, y))
    assert hist.eval_steps == [50, 100, 150, 200]
    assert hist.eval["val_loss"][-1] < 0.05 * initial
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert len(hist.steps) == 20 and hist.steps[-1] == 200
    fig = hist.plot()
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and len(ax.lines) == 2


def test_warmup_cosine_schedule():
    f = warmup_cosine(10, 110, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    torch.manual_seed(0)
    X, y = _problem()
    hist = train(Regressor(), _get_batch(X, y), TrainConfig(max_steps=110, lr=1.0e-2, warmup_steps=10,
                                                            progress=False, eval_every=0))
    assert hist.lr[9] == pytest.approx(1e-2) and hist.lr[-1] == pytest.approx(1e-2 * f(109))


def _mse(model, batch):
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def test_grad_accumulation_equals_bigger_batch():
    """Accumulating 4 micro-batches of 8 is one step on the batch of 32 (no dropout). Plain SGD moves by
    lr x gradient, so a gradient 4x too large (the loss not divided by grad_accum) shows; AdamW would not."""
    X, y = _problem()
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    cfg = dict(max_steps=3, lr=0.1, warmup_steps=1, progress=False, eval_every=0, grad_clip=None)
    a, b = net, nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    train(a, lambda s: (X[s * 32:(s + 1) * 32], y[s * 32:(s + 1) * 32]), TrainConfig(**cfg), loss_fn=_mse,
          optimizer=torch.optim.SGD(a.parameters(), lr=0.1))
    train(b, lambda s: (X[s * 8:(s + 1) * 8], y[s * 8:(s + 1) * 8]), TrainConfig(**cfg, grad_accum=4), loss_fn=_mse,
          optimizer=torch.optim.SGD(b.parameters(), lr=0.1))
    for p, q, p0 in zip(a.parameters(), b.parameters(), start):
        assert not torch.equal(p, p0)
        torch.testing.assert_close(p, q)


def test_gradient_clipping_limits_the_update():
    """One SGD step at lr 1 with grad_clip=c moves the parameters by exactly c (the clipped global norm)."""
    torch.manual_seed(0)
    X, y = _problem()
    model = nn.Linear(4, 1)
    batch = (X[:32], 100 * y[:32])  # far-off targets: a gradient norm in the hundreds
    model.zero_grad()
    _mse(model, batch).backward()
    raw_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert raw_norm > 50
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    cfg = TrainConfig(max_steps=1, warmup_steps=0, grad_clip=0.5, eval_every=0, progress=False)
    train(model, lambda s: batch, cfg, loss_fn=_mse, optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    moved = (torch.cat([p.detach().flatten() for p in model.parameters()]) - start).norm().item()
    assert moved == pytest.approx(0.5, rel=1e-4)


def test_weight_decay_only_on_matrices_and_embeddings():
    """With zero gradients AdamW's step is its decoupled decay alone: matrices and embeddings shrink by
    (1 - lr * weight_decay); biases and LayerNorm gains, as in GPT-2, do not move."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "lin": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def zero_loss(model, batch):
        return sum(p.sum() for p in model.parameters()) * 0.0

    cfg = TrainConfig(max_steps=1, lr=0.1, weight_decay=0.5, warmup_steps=0, grad_clip=None, eval_every=0,
                      progress=False)
    train(model, lambda s: None, cfg, loss_fn=zero_loss)  # the default optimizer: make_optimizer's AdamW
    after = dict(model.named_parameters())
    for name in ("emb.weight", "lin.weight"):
        torch.testing.assert_close(after[name], before[name] * (1 - 0.1 * 0.5))
    for name in ("lin.bias", "norm.weight", "norm.bias"):
        assert torch.equal(after[name], before[name]), name
    groups = make_optimizer(model, 1e-3, weight_decay=0.5).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.5 for p in g["params"]}
    assert decayed == {id(model["emb"].weight), id(model["lin"].weight)}


@pytest.mark.parametrize("every", [0, 3], ids=["only-at-the-end", "every-3-steps"])
def test_final_checkpoint_is_written(tmp_path, every):
    torch.manual_seed(0)
    X, y = _problem()
    model = Regressor()
    path = tmp_path / "run.pt"
    cfg = TrainConfig(max_steps=7, lr=1e-2, warmup_steps=1, log_every=1, eval_every=0, progress=False,
                      checkpoint_path=str(path), checkpoint_every=every)
    history = train(model, _get_batch(X, y), cfg)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["history"]["train_loss"] == history.train_loss
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v), k


def test_resume_gives_exactly_the_same_losses(tmp_path):
    X, y = _problem()
    cfg = dict(max_steps=40, lr=1e-2, warmup_steps=5, eval_every=10, log_every=5, progress=False)

    torch.manual_seed(1)
    full = train(Regressor(), _get_batch(X, y), TrainConfig(**cfg), eval_fn=_eval(X, y))

    ckpt = tmp_path / "run.pt"
    torch.manual_seed(1)
    part = TrainConfig(**{**cfg, "max_steps": 40}, checkpoint_path=str(ckpt), checkpoint_every=20)

    # "crash" after step 20: train a copy whose batches stop at step 20
    class Stop(Exception):
        pass

    get_batch = _get_batch(X, y)

    def crashing(step):
        if step >= 20:
            raise Stop
        return get_batch(step)

    with pytest.raises(Stop):
        train(Regressor(), crashing, part, eval_fn=_eval(X, y))
    assert load_checkpoint(ckpt)["step"] == 20

    torch.manual_seed(999)  # a different RNG state and different initial weights: resume must restore both
    resumed = train(Regressor(), _get_batch(X, y), part, eval_fn=_eval(X, y), resume_from=ckpt)
    assert resumed.train_loss == full.train_loss
    assert resumed.eval["val_loss"] == full.eval["val_loss"]
    assert resumed.steps == full.steps


def test_checkpoint_is_state_dicts_loadable_weights_only(tmp_path):
    model = Regressor()
    opt = torch.optim.AdamW(model.parameters())
    model(*_problem())[1].backward()
    opt.step()
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, model, opt, step=7, history=History(steps=[1], train_loss=[0.5]))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 7 and ckpt["history"]["train_loss"] == [0.5]
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary file left
    fresh = Regressor()
    load_checkpoint(path, fresh)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, Regressor(), step=1)

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, Regressor(), step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_nan_loss_is_a_clear_error():
    X, y = _problem()
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(Regressor(), lambda s: (X[:4], y[:4] * math.nan), TrainConfig(max_steps=2, progress=False))


def test_progress_bar_redraws_at_most_about_once_a_second(capsys):
    # In a notebook every redraw is a few messages on the kernel's output channel; tqdm's default of ten a
    # second over a minutes-long run overflows ZeroMQ's buffer and nbval misses the end of the cell.
    import time

    torch.manual_seed(0)
    X, y = _problem()
    batches = _get_batch(X, y)

    def slow_batch(step):
        time.sleep(0.01)  # 150 steps of ~10 ms: about 1.5 s, so 0.1 s throttling would redraw ~15 times
        return batches(step)

    t0 = time.perf_counter()
    train(Regressor(), slow_batch, TrainConfig(max_steps=150, lr=1e-3, log_every=10, progress=True, desc="slow"))
    seconds = time.perf_counter() - t0
    redraws = capsys.readouterr().err.count("slow")  # each redraw writes the bar again, description first
    assert 2 <= redraws <= seconds + 3, (redraws, seconds)  # first and last draw, then one a second


# --- events: on_step, on_eval, should_stop, max_seconds -----------------------------------------


def _run(**kwargs):
    torch.manual_seed(0)
    X, y = _problem()
    cfg = dict(max_steps=12, lr=1e-2, warmup_steps=2, eval_every=4, log_every=2, progress=False)
    cfg.update(kwargs.pop("cfg", {}))
    get_batch = kwargs.pop("get_batch", _get_batch(X, y))
    model = Regressor()
    return model, train(model, get_batch, TrainConfig(**cfg), eval_fn=_eval(X, y), **kwargs)


def test_on_step_and_on_eval_events():
    steps, evals = [], []
    _, history = _run(on_step=lambda step, m, h: steps.append((step, h.completed_steps, m.training)),
                      on_eval=lambda step, m, h: evals.append((step, h.eval_steps[-1])))
    assert steps == [(s, s, True) for s in range(1, 13)]
    assert evals == [(4, 4), (8, 8), (12, 12)]
    assert history.stop_reason == "max_steps" and history.completed_steps == 12


def test_should_stop_ends_cleanly(tmp_path, capsys):
    path = tmp_path / "run.pt"
    evals = []
    model, history = _run(cfg=dict(checkpoint_path=str(path), progress=True, desc="stopping"),
                          should_stop=lambda step, m, h: step == 5, on_eval=lambda step, m, h: evals.append(step))
    assert history.stop_reason == "should_stop" and history.completed_steps == 5
    assert history.eval_steps == [4, 5] and evals == [4, 5]  # the final evaluation ran, at the stop
    assert history.steps == [2, 4, 5] and len(history.train_loss) == 3  # the last, partial window is kept
    ckpt = load_checkpoint(path)  # the final checkpoint, at the step where it stopped
    assert ckpt["step"] == 5 and ckpt["history"]["stop_reason"] == "should_stop"
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    out = capsys.readouterr().out
    assert "stopping: 5 steps in" in out and "(stopped early: should_stop)" in out and "val_loss" in out


def test_a_run_stopped_early_resumes_to_the_full_run(tmp_path):
    full_model, full = _run()
    path = tmp_path / "run.pt"
    _run(cfg=dict(checkpoint_path=str(path)), should_stop=lambda step, m, h: step == 6)
    torch.manual_seed(123)  # another RNG state: resuming restores the saved one
    X, y = _problem()
    model = Regressor()
    cfg = TrainConfig(max_steps=12, lr=1e-2, warmup_steps=2, eval_every=4, log_every=2, progress=False)
    resumed = train(model, _get_batch(X, y), cfg, eval_fn=_eval(X, y), resume_from=path)
    assert resumed.train_loss == full.train_loss and resumed.stop_reason == "max_steps"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), full_model.state_dict().values()))


def test_max_seconds_is_a_wall_time_budget(tmp_path, capsys):
    X, y = _problem()
    batches = _get_batch(X, y)

    def slow(step):
        time.sleep(0.05)
        return batches(step)

    path = tmp_path / "run.pt"
    t0 = time.perf_counter()
    _, history = _run(cfg=dict(max_steps=1000, max_seconds=0.3, checkpoint_path=str(path), progress=True),
                      get_batch=slow)
    assert time.perf_counter() - t0 < 5
    assert history.stop_reason == "max_seconds" and 2 <= history.completed_steps < 100
    assert history.eval_steps[-1] == history.completed_steps  # evaluated at the end
    assert load_checkpoint(path)["step"] == history.completed_steps
    assert "(stopped early: max_seconds)" in capsys.readouterr().out


class _LossFirst(NamedTuple):  # an output whose loss is not its second item
    loss: torch.Tensor
    logits: torch.Tensor


def test_default_loss_reads_the_loss_by_name():
    x = torch.ones(2)
    assert default_loss(lambda b: _LossFirst(b.sum(), b), x).item() == 2.0
    assert default_loss(lambda b: (b, b.sum()), x).item() == 2.0  # a plain (logits, loss) tuple
    assert default_loss(lambda b: b.mean(), x).item() == 1.0  # the loss itself
    with pytest.raises(TypeError, match="scalar loss"):
        default_loss(lambda b: b, x)

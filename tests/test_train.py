"""The training loop: it learns, schedules, clips, accumulates, and resumes exactly."""

import math

import pytest
import torch
from torch import nn

from labkit.train import History, TrainConfig, load_checkpoint, save_checkpoint, train, warmup_cosine


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


def test_grad_accumulation_equals_bigger_batch():
    """Accumulating 4 micro-batches of 8 is one step on the batch of 32 (no dropout)."""
    X, y = _problem()
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def loss_fn(model, batch):
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    cfg = dict(max_steps=3, lr=1e-2, warmup_steps=1, progress=False, eval_every=0, grad_clip=None)
    a, b = net, nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    b.load_state_dict(a.state_dict())
    train(a, lambda s: (X[s * 32:(s + 1) * 32], y[s * 32:(s + 1) * 32]), TrainConfig(**cfg), loss_fn=loss_fn)
    train(b, lambda s: (X[s * 8:(s + 1) * 8], y[s * 8:(s + 1) * 8]), TrainConfig(**cfg, grad_accum=4), loss_fn=loss_fn)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


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

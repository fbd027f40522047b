"""One training loop for every notebook.

``train(model, get_batch, config)`` runs AdamW with linear warmup and cosine
decay, gradient accumulation and clipping, mixed precision on a GPU, periodic
evaluation, a progress bar, and atomic checkpoints that resume exactly:

    history = train(model, get_batch, TrainConfig(max_steps=500), eval_fn=val_loss)
    history.plot()

``get_batch(step)`` returns the arguments of ``model(*batch)``; the model
returns a loss, an output with a ``.loss`` (``GPTOutput``, ``BERTOutput``), or a
plain ``(logits, loss)`` tuple.

Events, for watching and for stopping early: ``on_step(step, model, history)``
after every optimizer step, ``on_eval(step, model, history)`` after every
evaluation, ``should_stop(step, model, history) -> bool`` after every step, and
``TrainConfig.max_seconds``, a wall-time budget. An early stop ends like a full
run: the final evaluation, the final checkpoint and the summary line, with
``history.stop_reason`` saying why it stopped.

Under ``torchrun`` (a process group initialised, ``labkit.distributed.setup``) with a
``DistributedDataParallel`` model, the loop is rank-aware: only rank 0 shows the bar,
prints and writes checkpoints; the logged train loss is the mean over the ranks; an
early stop is decided together (any rank's reason stops all of them, so none waits
forever in an all-reduce). Each rank's ``get_batch`` returns its own share of the batch.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from .device import autocast, autocast_dtype, module_device, to_device
from .optim import decay_groups
from .threads import ThreadGovernor

__all__ = ["TrainConfig", "History", "train", "warmup_cosine", "make_optimizer",
           "save_checkpoint", "load_checkpoint", "default_loss"]


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps (each may accumulate several micro-batches)
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr_ratio: float = 0.1  # cosine decays the lr to min_lr_ratio * lr at max_steps
    warmup_steps: int = 100  # linear warmup from ~0 to lr
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only (not biases, norms)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # max global gradient norm; None to disable
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_every: int = 100  # steps between evaluations (0: only at the end)
    log_every: int = 10  # steps between progress-bar/history updates of the train loss
    amp: bool = True  # mixed precision on a GPU (no effect on the CPU)
    checkpoint_path: str | None = None  # where to save; None: no checkpoints
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    progress: bool = True  # show a tqdm bar
    desc: str = "training"  # the bar's label
    max_seconds: float | None = None  # wall-time budget for the steps; past it, stop cleanly (None: no limit)


@dataclass
class History:
    """What happened during training; ``plot()`` draws the loss curves."""

    steps: list[int] = field(default_factory=list)  # steps at which train_loss was logged
    train_loss: list[float] = field(default_factory=list)  # mean loss over the logged window
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval: dict[str, list[float]] = field(default_factory=dict)  # metric name -> values at eval_steps
    seconds: float = 0.0  # wall time spent in train() (all runs, when resumed)
    tokens: int = 0  # tokens seen, if the batches are token tensors
    completed_steps: int = 0  # optimizer steps done (all runs, when resumed)
    stop_reason: str | None = None  # "max_steps", "max_seconds", "should_stop" or "interrupted"

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.eval_steps.append(step)
        for k, v in metrics.items():
            self.eval.setdefault(k, []).append(float(v))

    @property
    def final(self) -> dict[str, float]:
        """The last logged train loss and eval metrics."""
        out = {"train_loss": self.train_loss[-1]} if self.train_loss else {}
        out.update({k: v[-1] for k, v in self.eval.items() if v})
        return out

    def plot(self, title: str = "Training curves", logy: bool = False, ax=None):
        """Train loss (and every eval metric whose name contains 'loss') against step."""
        from .viz.plots import loss_curves

        curves = {"train loss": (self.steps, self.train_loss)}
        for k, v in self.eval.items():
            if "loss" in k:
                curves[k.replace("_", " ")] = (self.eval_steps, v)
        return loss_curves(curves, title=title, xlabel="optimizer step", ylabel="cross-entropy loss"
                           if any("loss" in k for k in self.eval) else "loss", logy=logy, ax=ax)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, d: dict) -> "History":
        return cls(**d)


def warmup_cosine(warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> Callable[[int], float]:
    """Multiplier of the peak lr at each step: linear warmup, then cosine decay to ``min_lr_ratio``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW that decays weight matrices and embeddings but not biases or norm gains (as GPT-2)."""
    groups = decay_groups((p for p in model.parameters() if p.requires_grad), weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def default_loss(model: nn.Module, batch) -> torch.Tensor:
    """``model(*batch)``'s loss: its ``.loss`` (GPTOutput, BERTOutput), the second item of a plain
    ``(logits, loss)`` tuple, or the output itself if it is a scalar."""
    out = model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
    if hasattr(out, "loss"):
        loss = out.loss
    elif isinstance(out, (tuple, list)):
        loss = out[1] if len(out) > 1 else None
    else:
        loss = out
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
        raise TypeError("the model must return a scalar loss, an output with .loss, or (logits, loss); "
                        "pass loss_fn=... otherwise")
    return loss


# --- checkpoints ---------------------------------------------------------------

def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path: str | Path, model: nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    history: History | None = None, extra: dict | None = None) -> None:
    """Save state dicts of model, optimizer, scheduler, the step, history and RNG, atomically."""
    model = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    model = getattr(model, "_orig_mod", model)
    _atomic_save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step,
        "history": history.state_dict() if history is not None else None,
        "rng": _rng_state(),
        "extra": extra or {},
    }, path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None, optimizer=None, scheduler=None,
                    map_location: str | torch.device | None = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` into whichever objects are given; return the dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if model is not None:
        getattr(model, "_orig_mod", model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt


# --- the loop --------------------------------------------------------------------

_STOP_REASONS = ("should_stop", "max_seconds")


def _mean_over_ranks(value: float) -> float:
    """``value`` averaged over the ranks of a process group (itself in a single process)."""
    from . import distributed

    if not distributed.is_distributed():
        return value
    return float(distributed.all_reduce_mean(torch.tensor(value, dtype=torch.float64, device=distributed.comm_device())))


def _agreed_stop(reason: str | None) -> str | None:
    """Every rank's stop reason combined: if any rank wants to stop, all stop (with the first reason listed)."""
    import torch.distributed as dist

    from . import distributed

    flags = torch.tensor([reason == r for r in _STOP_REASONS], dtype=torch.int32, device=distributed.comm_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return next((r for r, f in zip(_STOP_REASONS, flags.tolist()) if f), None)

class _Precision:
    """Mixed precision on a GPU (bf16 where supported, else fp16 with a gradient scaler); nothing on the CPU."""

    def __init__(self, device: torch.device, enabled: bool):
        self.device, self.enabled = device, enabled and autocast_dtype(device) is not None
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.enabled and autocast_dtype(device) == torch.float16)

    def autocast(self):
        return autocast(self.device, enabled=self.enabled)

    def step(self, optimizer, model: nn.Module, grad_clip: float | None) -> None:
        """Clip the gradient's global norm (after unscaling), then update the weights."""
        if grad_clip is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)


class _Progress:
    """The bar, the logged train loss (a mean over each ``log_every`` steps, and over the ranks), the wall time
    and its budget, and the CPU thread governor."""

    def __init__(self, config: TrainConfig, start: int, device: torch.device, main: bool):
        from tqdm.auto import tqdm

        self.config, self.main, self.window = config, main, []
        # At most one redraw a second: in a notebook every redraw is a few widget messages, and tqdm's default 10 a
        # second floods the kernel's output channel (ZeroMQ drops messages past its 1000-message buffer, so a test
        # runner such as nbval can miss the end of the cell).
        self.bar = tqdm(total=config.max_steps, initial=start, desc=config.desc, dynamic_ncols=True, mininterval=1.0,
                        disable=not config.progress or not main)
        # On a CPU shared with other busy processes, give PyTorch only the cores they leave free (labkit.threads)
        self.governor = ThreadGovernor() if device.type == "cpu" else None
        self.t0 = self.t_start = time.perf_counter()  # the budget counts this run only

    def add(self, loss: torch.Tensor, batch, history: History) -> None:
        self.window.append(loss.item())
        if isinstance(batch, (tuple, list)) and isinstance(batch[0], torch.Tensor):
            history.tokens += batch[0].numel()

    def log(self, done: int, history: History) -> None:
        if self.governor is not None:
            self.governor.update()  # cheap: re-measures the machine's load every 2 s at most
        if done % self.config.log_every == 0 or done == self.config.max_steps:
            self.flush(done, history)
            self.bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", lr=f"{history.lr[-1]:.2e}", refresh=False)
        self.bar.update(1)

    def flush(self, step: int, history: History) -> None:
        if self.window:
            history.steps.append(step)
            history.train_loss.append(_mean_over_ranks(sum(self.window) / len(self.window)))
            self.window = []

    def lap(self, history: History) -> None:
        history.seconds += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()

    def over_budget(self) -> bool:
        return self.config.max_seconds is not None and time.perf_counter() - self.t_start >= self.config.max_seconds

    def close(self, history: History) -> None:
        self.bar.close()
        if self.governor is not None:
            self.governor.close()
        self.lap(history)

    def summary(self, step: int, history: History) -> None:
        if self.config.progress and self.main:  # a plain-text line that survives where the bar's widget does not
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in history.final.items())
            early = "" if history.stop_reason in ("max_steps", "interrupted") else f" (stopped early: {history.stop_reason})"
            print(f"{self.config.desc}: {step} steps in {history.seconds:.1f} s{early}; {metrics}")


def _resume(resume_from, model, optimizer, scheduler, device) -> tuple[History, int]:
    if resume_from is None or not Path(resume_from).is_file():
        return History(), 0
    ckpt = load_checkpoint(resume_from, model, optimizer, scheduler, map_location=device)
    _set_rng_state(ckpt["rng"])
    return (History.from_state_dict(ckpt["history"]) if ckpt["history"] else History()), ckpt["step"]


def _evaluate(step: int, model: nn.Module, eval_fn, precision: _Precision, history: History, on_eval) -> None:
    if eval_fn is None:
        return
    was_training = model.training
    model.eval()
    with torch.no_grad(), precision.autocast():
        result = eval_fn(model)
    model.train(was_training)
    history.log_eval(step, result if isinstance(result, dict) else {"val_loss": float(result)})
    if on_eval is not None:
        on_eval(step, model, history)


def _check_finite(loss: torch.Tensor, step: int, scheduler) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower the learning rate (now "
                                 f"{scheduler.get_last_lr()[0]:.2e}) or check the data")


def _stop_reason(done: int, model: nn.Module, history: History, should_stop, progress: _Progress) -> str | None:
    """Why to stop before ``max_steps`` (the caller, or the time budget), agreed over the ranks under torchrun
    (else the others would wait forever in DDP's all-reduce)."""
    from . import distributed

    reason = None
    if should_stop is not None and should_stop(done, model, history):
        reason = "should_stop"
    elif progress.over_budget():
        reason = "max_seconds"
    return _agreed_stop(reason) if distributed.is_distributed() else reason


def _due(every: int, done: int, max_steps: int) -> bool:
    return bool(every) and done % every == 0 and done != max_steps


def train(
    model: nn.Module,
    get_batch: Callable[[int], Any],
    config: TrainConfig | None = None,
    eval_fn: Callable[[nn.Module], float | dict[str, float]] | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] = default_loss,
    optimizer: torch.optim.Optimizer | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | str | None = None,
    *,
    on_eval: Callable[[int, nn.Module, History], None] | None = None,
    on_step: Callable[[int, nn.Module, History], None] | None = None,
    should_stop: Callable[[int, nn.Module, History], bool] | None = None,
) -> History:
    """Train ``model`` for ``config.max_steps`` optimizer steps; return the History. ``eval_fn(model)`` gives a number
    (``val_loss``) or a dict of metrics; ``on_eval``, ``on_step`` and ``should_stop`` (True: stop early, as
    ``config.max_seconds`` does) are called with ``(step, model, history)``; ``resume_from`` continues a run exactly."""
    from . import distributed

    config = config or TrainConfig()
    device = torch.device(device) if device is not None else module_device(model)
    optimizer = optimizer or make_optimizer(model, config.lr, config.weight_decay, config.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.max_steps, config.min_lr_ratio))
    precision = _Precision(device, config.amp)
    history, start = _resume(resume_from, model, optimizer, scheduler, device)
    main = distributed.is_main()  # under torchrun: one bar, one printer, one checkpoint writer

    def checkpoint(step: int) -> None:
        if config.checkpoint_path and main:
            save_checkpoint(config.checkpoint_path, model, optimizer, scheduler, step, history)

    model.train()
    progress = _Progress(config, start, device, main)
    step, history.stop_reason = start, None
    try:
        for step in range(start, config.max_steps):
            # 1. forward and backward over the micro-batches of one optimizer step
            for micro in range(config.grad_accum):
                batch = to_device(get_batch(step * config.grad_accum + micro), device)
                with precision.autocast():
                    loss = loss_fn(model, batch)
                _check_finite(loss, step, scheduler)
                precision.scaler.scale(loss / config.grad_accum).backward()
                progress.add(loss, batch, history)
            # 2. clip, update the weights, move the learning rate along its schedule
            precision.step(optimizer, model, config.grad_clip)
            history.lr.append(scheduler.get_last_lr()[0])
            scheduler.step()
            done = history.completed_steps = step + 1
            # 3. log, evaluate, checkpoint, tell the caller
            progress.log(done, history)
            if _due(config.eval_every, done, config.max_steps):
                _evaluate(done, model, eval_fn, precision, history, on_eval)
            if _due(config.checkpoint_every, done, config.max_steps):
                progress.lap(history)
                checkpoint(done)
            if on_step is not None:
                on_step(done, model, history)
            # 4. stop early, by the caller's choice or the time budget
            if done < config.max_steps and (reason := _stop_reason(done, model, history, should_stop, progress)):
                history.stop_reason, step = reason, done
                break
        else:
            step, history.stop_reason = config.max_steps, "max_steps"
        progress.flush(step, history)  # the steps since the last logged window (an early stop between two)
        if not history.eval_steps or history.eval_steps[-1] != step:
            _evaluate(step, model, eval_fn, precision, history, on_eval)
    except KeyboardInterrupt:  # a learner pressed stop: keep what was learned
        history.stop_reason = "interrupted"
        print(f"Interrupted at step {step}; the model keeps its weights"
              + (f" and a checkpoint was saved to {config.checkpoint_path}" if config.checkpoint_path else ""))
    finally:
        progress.close(history)
    checkpoint(step)
    progress.summary(step, history)
    model.eval()
    return history

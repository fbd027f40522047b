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
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from .device import ThreadGovernor, autocast, autocast_dtype, get_device
from .optim import decay_groups

__all__ = ["TrainConfig", "History", "train", "warmup_cosine", "make_optimizer", "decay_groups",
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

def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def train(
    model: nn.Module,
    get_batch: Callable[[int], Any],
    config: TrainConfig | None = None,
    eval_fn: Callable[[nn.Module], float | dict[str, float]] | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] = default_loss,
    optimizer: torch.optim.Optimizer | None = None,
    resume_from: str | Path | None = None,
    callback: Callable[[int, nn.Module, History], None] | None = None,
    device: torch.device | str | None = None,
    *,
    on_eval: Callable[[int, nn.Module, History], None] | None = None,
    on_step: Callable[[int, nn.Module, History], None] | None = None,
    should_stop: Callable[[int, nn.Module, History], bool] | None = None,
) -> History:
    """Train ``model`` for ``config.max_steps`` optimizer steps and return the History.

    ``eval_fn(model)`` returns a number (logged as ``val_loss``) or a dict of metrics; it
    runs under ``torch.no_grad()`` in eval mode. ``on_eval(step, model, history)`` runs after
    each evaluation (print samples there; ``callback`` is its older name), ``on_step`` after
    each optimizer step, and ``should_stop`` after each step: True ends training early, as
    ``config.max_seconds`` does, with the final evaluation, checkpoint and summary line.
    ``resume_from`` continues a saved run exactly.
    """
    from tqdm.auto import tqdm

    from . import distributed

    main = distributed.is_main()
    if callback is not None and on_eval is not None:
        raise TypeError("pass on_eval or its older name callback, not both")
    on_eval = on_eval if on_eval is not None else callback
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    optimizer = optimizer or make_optimizer(model, config.lr, config.weight_decay, config.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.max_steps, config.min_lr_ratio))
    use_amp = config.amp and autocast_dtype(device) is not None
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and autocast_dtype(device) == torch.float16)
    history, start = History(), 0
    if resume_from is not None and Path(resume_from).is_file():
        ckpt = load_checkpoint(resume_from, model, optimizer, scheduler, map_location=device)
        history = History.from_state_dict(ckpt["history"]) if ckpt["history"] else History()
        start = ckpt["step"]
        _set_rng_state(ckpt["rng"])

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast(device, enabled=use_amp):
            result = eval_fn(model)
        model.train(was_training)
        history.log_eval(step, result if isinstance(result, dict) else {"val_loss": float(result)})
        if on_eval is not None:
            on_eval(step, model, history)

    def checkpoint(step: int) -> None:
        if config.checkpoint_path and main:  # one writer: rank 0
            save_checkpoint(config.checkpoint_path, model, optimizer, scheduler, step, history)

    model.train()
    # At most one redraw a second: in a notebook every redraw is a few widget messages, and a long run at
    # tqdm's default 10 a second floods the kernel's output channel (ZeroMQ drops messages past its 1000-message
    # buffer, so a test runner such as nbval can miss the end of the cell).
    bar = tqdm(total=config.max_steps, initial=start, desc=config.desc, disable=not config.progress or not main,
               dynamic_ncols=True, mininterval=1.0)
    # On a CPU shared with other busy processes, give PyTorch only the cores they leave free (labkit.device)
    governor = ThreadGovernor() if device.type == "cpu" else None
    t0, window = time.perf_counter(), []
    t_start = t0  # the wall-time budget counts this run only
    step = start
    history.stop_reason = None
    try:
        for step in range(start, config.max_steps):
            for micro in range(config.grad_accum):
                batch = _to(get_batch(step * config.grad_accum + micro), device)
                with autocast(device, enabled=use_amp):
                    loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at step {step}: lower the learning rate (now "
                        f"{scheduler.get_last_lr()[0]:.2e}) or check the data")
                scaler.scale(loss / config.grad_accum).backward()
                window.append(loss.item())
                if isinstance(batch, (tuple, list)) and isinstance(batch[0], torch.Tensor):
                    history.tokens += batch[0].numel()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            history.lr.append(scheduler.get_last_lr()[0])
            scheduler.step()
            done = step + 1
            history.completed_steps = done
            if governor is not None:
                governor.update()  # cheap: re-measures the machine's load every 2 s at most
            if done % config.log_every == 0 or done == config.max_steps:
                history.steps.append(done)
                history.train_loss.append(_mean_over_ranks(sum(window) / len(window)))
                bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", lr=f"{history.lr[-1]:.2e}", refresh=False)
                window = []
            bar.update(1)
            if config.eval_every and done % config.eval_every == 0 and done != config.max_steps:
                evaluate(done)
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done != config.max_steps:
                history.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint(done)
            if on_step is not None:
                on_step(done, model, history)
            if done < config.max_steps:  # an early stop: by the caller, or the time budget ran out
                if should_stop is not None and should_stop(done, model, history):
                    history.stop_reason = "should_stop"
                elif config.max_seconds is not None and time.perf_counter() - t_start >= config.max_seconds:
                    history.stop_reason = "max_seconds"
                if distributed.is_distributed():  # stop together, or the others would wait in DDP's all-reduce
                    history.stop_reason = _agreed_stop(history.stop_reason)
                if history.stop_reason is not None:
                    step = done
                    break
        else:
            step = config.max_steps
            history.stop_reason = "max_steps"
        if window:  # the steps since the last logged window (an early stop between two log points)
            history.steps.append(step)
            history.train_loss.append(_mean_over_ranks(sum(window) / len(window)))
            window = []
        if not history.eval_steps or history.eval_steps[-1] != step:
            evaluate(step)
    except KeyboardInterrupt:  # a learner pressed stop: keep what was learned
        history.stop_reason = "interrupted"
        print(f"Interrupted at step {step}; the model keeps its weights"
              + (f" and a checkpoint was saved to {config.checkpoint_path}" if config.checkpoint_path else ""))
    finally:
        bar.close()
        if governor is not None:
            governor.close()
        history.seconds += time.perf_counter() - t0
    checkpoint(step)
    if config.progress and main:  # a plain-text line that survives where the bar's widget does not (GitHub, nbconvert)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in history.final.items())
        stopped = "" if history.stop_reason in ("max_steps", "interrupted") else f" (stopped early: {history.stop_reason})"
        print(f"{config.desc}: {step} steps in {history.seconds:.1f} s{stopped}; {metrics}")
    model.eval()
    return history

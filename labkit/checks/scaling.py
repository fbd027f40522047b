"""Checkers for notebook 16 (scaling up: the online-softmax update of FlashAttention, the all-reduce average of
gradients in data-parallel training); see labkit.checks._core."""

from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
import traceback
from pathlib import Path
from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_online_softmax_update", "check_average_gradients", "run_in_processes"]


# --- exercise: one step of the online softmax ------------------------------------------------------------------


def _flat(m, l, acc):
    return torch.cat([torch.as_tensor(m).flatten(), torch.as_tensor(l).flatten(), torch.as_tensor(acc).flatten()])


def _update_reference(m, l, acc, scores, v):
    from labkit.flash import online_softmax_update

    return _flat(*online_softmax_update(m, l, acc, scores, v))


def _state_after(scores, v):
    # the running (m, l, acc) of a block of scores seen before, computed directly
    m = scores.amax(-1)
    p = torch.exp(scores - m.unsqueeze(-1))
    return m, p.sum(-1), p @ v


def _update_cases() -> list[Case]:
    g = torch.Generator().manual_seed(160)
    s1, s2 = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    v1, v2 = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    start = (torch.full((3,), -math.inf, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
             torch.zeros(3, 2, dtype=torch.float64))
    big = s2 + 8.0  # the new block holds the larger scores: the old sums must be rescaled
    return [Case("the first block (m = -inf, l = 0, acc = 0)", (*start, s1, v1)),
            Case("a second block, smaller scores than the first", (*_state_after(s1 + 3.0, v1), s2, v2)),
            Case("a second block with larger scores (m grows)", (*_state_after(s1, v1), big, v2)),
            Case("batched rows (2, 3, ...)", (*_state_after(torch.stack([s1, s1 * 2]), v1), torch.stack([s2, big]), v2))]


def _no_rescale(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1))
    p = torch.exp(scores - m_new.unsqueeze(-1))
    return _flat(m_new, l + p.sum(-1), acc + p @ v)


def _no_shift(m, l, acc, scores, v):
    p = torch.exp(scores)
    return _flat(torch.maximum(m, scores.amax(-1)), l + p.sum(-1), acc + p @ v)


def check_online_softmax_update(learner_fn: Callable) -> CheckResult:
    """Notebook 16: ``online_softmax_update(m, l, acc, scores, v)`` -> ``(m, l, acc)``: the running max, the
    denominator sum(exp(s - m)) and the numerator sum(exp(s - m) v) after one more block of scores."""
    return check_close(
        "online_softmax_update", lambda *a: _flat(*learner_fn(*a)), _update_reference, _update_cases(),
        hint="Hint: m' = max(m, scores.amax(-1)); p = exp(scores - m'[..., None]); c = exp(m - m'); "
             "l' = c * l + p.sum(-1); acc' = c[..., None] * acc + p @ v.",
        mistakes=[(_no_rescale, "Hint: when the max grows, the old sums were computed with the old max: multiply l "
                                "and acc by exp(m - m') before adding the new block."),
                  (_no_shift, "Hint: subtract the running max before exp (exp(scores - m')), or large scores "
                              "overflow; l and acc are then sums of exp(s - m').")],
        atol=1e-9, rtol=1e-9,
    )


# --- exercise: the all-reduce average of gradients (what DDP does after every backward) ----------------------


def _rank_model(rank: int) -> torch.nn.Module:
    # the same weights on every rank (as DDP ensures), a different batch per rank: different gradients
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    model[0].bias.requires_grad_(False)  # a parameter without a gradient, which an average must skip
    g = torch.Generator().manual_seed(1000 + rank)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    torch.nn.functional.mse_loss(model(x), y).backward()
    return model


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _process(rank: int, world: int, init_file: str, fn: Callable, out: str) -> None:
    torch.set_num_threads(1)  # a forked child: no OpenMP pool of its own
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        try:
            model = _rank_model(rank)
            fn(model)
            torch.save({"grads": _grads(model)}, out)
        finally:
            dist.destroy_process_group()
    except BaseException as error:  # noqa: BLE001 - report the learner's error to the parent, whatever it is
        where = traceback.extract_tb(error.__traceback__)[-1].name
        torch.save({"error": f"{type(error).__name__}: {error}", "kind": type(error).__name__, "where": where,
                    "trace": traceback.format_exc()}, out)


def _raise_not_implemented(name: str, message: str) -> None:
    def stub():
        raise NotImplementedError(message)

    stub.__code__ = stub.__code__.replace(co_name=name, co_qualname=name)  # checkers name the stub from its frame
    stub()


def run_in_processes(fn: Callable, world: int, timeout: float = 60.0) -> list[torch.Tensor]:
    """Run ``fn(model)`` in ``world`` forked processes joined in a ``gloo`` process group (``torch.distributed``
    works inside ``fn``). Each process builds the same small model and computes gradients on its own batch
    first; the list holds every rank's gradients (flattened) after ``fn``. An error in any rank is raised
    here as a RuntimeError with that rank's message."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RuntimeError("this checker forks processes, which this platform cannot do (Windows): run notebook 16's "
                           "torchrun cells instead")
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        outs = [os.path.join(tmp, f"rank{r}.pt") for r in range(world)]
        procs = [ctx.Process(target=_process, args=(r, world, init_file, fn, outs[r]), daemon=True) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        if hung:
            raise RuntimeError(f"rank(s) {hung} of {world} did not finish within {timeout:.0f} s: every rank must call "
                               "the same collectives in the same order (an all_reduce on one rank only waits forever)")
        results = [torch.load(o, weights_only=True) if Path(o).exists() else {"error": "the process died"}
                   for o in outs]
    for r, res in enumerate(results):
        if res.get("kind") == "NotImplementedError":  # the exercise's stub: raised here as from that function
            _raise_not_implemented(res["where"], res["error"])
        if "error" in res:
            raise RuntimeError(f"on rank {r} of {world}: {res['error']}")
    return [res["grads"] for res in results]


def _average_reference(world: int) -> torch.Tensor:
    return torch.stack([_grads(_rank_model(r)) for r in range(world)]).mean(0).repeat(world)


def _sum_only(model):
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def _divide_by_two(model):
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= 2


def check_average_gradients(learner_fn: Callable) -> CheckResult:
    """Notebook 16: ``average_gradients(model)`` replaces every parameter's ``.grad`` (where there is one) by its
    mean over the processes of the default process group, in place: what DDP's all-reduce does. Run in 2 and 3
    forked ``gloo`` processes."""
    def across_ranks(fn):
        return lambda world: torch.cat(run_in_processes(fn, world))

    return check_close(
        "average_gradients", across_ranks(learner_fn), _average_reference,
        [Case("2 processes", (2,)), Case("3 processes", (3,))],
        hint="Hint: for each parameter p with p.grad not None: dist.all_reduce(p.grad, op=dist.ReduceOp.SUM), then "
             "p.grad /= dist.get_world_size().",
        mistakes=[(across_ranks(_sum_only), "Hint: all_reduce sums the gradients of all ranks; DDP averages them (the "
                                            "loss is a mean over the global batch): divide by dist.get_world_size()."),
                  (across_ranks(_divide_by_two), "Hint: divide by dist.get_world_size(), not by 2: the same code "
                                                 "must work on any number of processes.")],
        atol=1e-12, rtol=1e-12,
    )

"""Exercise checkers: run a learner's function against the reference on seeded cases.

Every checker follows one pattern (``check_close``): build a few seeded cases,
call the learner's function and the reference on each, and print either a
pass message or a hint that names the case and what differed (shape, dtype or
values). Checkers return ``True``/``False`` and never raise, so a notebook
keeps running while the learner works on an exercise.

Exercise-specific checkers (``check_softmax``, ``check_causal_mask`` …) are
thin wrappers that supply the cases, the reference and the hint; they live in
the concept modules beside this one and are all importable from ``labkit.checks``.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

__all__ = ["Case", "CheckResult", "check_close", "check_true", "check_warmup_mse", "random_cases"]


class CheckResult:
    """True or False for code (``assert check_x(fn)``); shows nothing in a notebook, since the
    checker has already printed its message."""

    def __init__(self, passed: bool):
        self.passed = bool(passed)

    def __bool__(self) -> bool:
        return self.passed

    def __eq__(self, other) -> bool:
        return bool(self) == bool(other)

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self):  # the ✅/❌ line is the output; don't echo the return value
        pass


@dataclass
class Case:
    """One seeded test case: positional ``args`` (and ``kwargs``) for both functions."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def _compare(got: Any, want: Any, atol: float, rtol: float) -> str | None:
    """Return None if equal, else a sentence saying what differed."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"expected a {type(want).__name__} of {len(want)} items, got {_describe(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = _compare(g, w, atol, rtol)
            if msg:
                return f"item {i}: {msg}"
        return None
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {_describe(got)}"
        if got.shape != want.shape:
            return f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
        if want.dtype == torch.bool or not want.is_floating_point():
            if not torch.equal(got.to(want.dtype), want):
                idx = (got.to(want.dtype) != want).nonzero()[0].tolist()
                return f"values differ, first at index {idx}: expected {want[tuple(idx)].item()}, got {got[tuple(idx)].item()}"
            return None
        got = got.detach().to(want.dtype)
        if not torch.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True):
            diff = (got - want).abs().nan_to_num(nan=float("inf"))  # a NaN counts as the worst difference
            idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
            return (f"values differ: largest difference {diff.max().item():.3g} at index {list(idx)} "
                    f"(expected {want[idx].item():.4g}, got {got[idx].item():.4g})")
        return None
    if isinstance(want, float):
        if not isinstance(got, (int, float)) and not (isinstance(got, torch.Tensor) and got.numel() == 1):
            return f"expected a number, got {_describe(got)}"
        g = float(got)
        if abs(g - want) > atol + rtol * abs(want):
            return f"expected {want:.4g}, got {g:.4g}"
        return None
    if got != want:
        return f"expected {want!r}, got {got!r}"
    return None


def check_close(
    name: str,
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    hint: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on every case; print a pass message or a hint."""
    return CheckResult(_check_close(name, learner_fn, reference_fn, cases, hint, atol, rtol))


def _check_close(name, learner_fn, reference_fn, cases, hint, atol, rtol) -> bool:
    for case in cases:
        try:
            got = learner_fn(*case.args, **case.kwargs)
        except NotImplementedError:
            print(f"❌ {name}: not implemented yet. {hint}".rstrip())
            return False
        except Exception as e:  # a learner's bug: show it as a hint, don't crash the notebook
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"❌ {name}: case '{case.name}' raised {type(e).__name__}: {e} (line {where.lineno}). {hint}".rstrip())
            return False
        want = reference_fn(*case.args, **case.kwargs)
        msg = _compare(got, want, atol, rtol)
        if msg:
            print(f"❌ {name}: case '{case.name}': {msg}. {hint}".rstrip())
            return False
    print(f"✅ {name}: all {len(cases)} cases pass.")
    return True


def check_true(name: str, condition_fn: Callable[[], bool | str], hint: str = "") -> CheckResult:
    """Check a free-form property: ``condition_fn`` returns True, or a string saying what is wrong."""
    return CheckResult(_check_true(name, condition_fn, hint))


def _check_true(name, condition_fn, hint) -> bool:
    try:
        result = condition_fn()
    except NotImplementedError:
        print(f"❌ {name}: not implemented yet. {hint}".rstrip())
        return False
    except Exception as e:
        print(f"❌ {name}: raised {type(e).__name__}: {e}. {hint}".rstrip())
        return False
    if result is True:
        print(f"✅ {name}: correct.")
        return True
    detail = result if isinstance(result, str) else "the condition does not hold"
    print(f"❌ {name}: {detail}. {hint}".rstrip())
    return False


def random_cases(shapes: Iterable[tuple], seed: int = 0, n_args: int = 2) -> list[Case]:
    """One case per shape, each with ``n_args`` seeded standard-normal tensors of that shape."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        args = tuple(torch.randn(*shape, generator=g) for _ in range(n_args))
        out.append(Case(f"shape {shape}", args))
    return out


# --- notebook 00 -----------------------------------------------------------

def check_warmup_mse(learner_fn: Callable) -> CheckResult:
    """Notebook 00 warm-up: mean squared error ``mse(pred, target)`` as a 0-dim tensor."""
    return check_close(
        "mse",
        learner_fn,
        lambda p, t: torch.nn.functional.mse_loss(p, t),
        random_cases([(5,), (3, 4), (2, 3, 4)]),
        hint="Hint: square the difference, then take the mean over *all* elements (.mean()), giving a 0-dim tensor.",
    )

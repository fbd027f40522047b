"""Exercise checkers: run a learner's function against the reference on seeded cases.

Every checker follows one pattern (``check_close``): build a few seeded cases,
call the learner's function and the reference on each, and print either a
pass message or a hint that names the case and what differed (shape, dtype or
values). Checkers return ``True``/``False`` and never raise, so a notebook
keeps running while the learner works on an exercise.

A checker can also list *typical mistakes*, ``(wrong_fn, hint)`` pairs: when the
learner's function gives what ``wrong_fn`` gives on every case (the same values,
or the same error), the hint printed is that mistake's, not the general one. An
exercise still at its stub (it raises ``NotImplementedError``) gets no hint, only
what to write. ``check_true`` checks a free-form property instead.

Each check is recorded (name, passed, time) in a small JSON file in
``labkit.data.cache_dir()``; ``progress()`` summarises it, ``reset_progress()`` clears it.

Exercise-specific checkers (``check_softmax``, ``check_causal_mask`` …) are
thin wrappers that supply the cases, the reference, the hint and the mistakes;
they live in the concept modules beside this one and are all importable from
``labkit.checks``.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import torch

__all__ = ["Case", "CheckResult", "Mistake", "check_close", "check_true", "matching_mistake",
           "random_cases", "progress", "reset_progress"]

Mistake = tuple[Callable, str]  # (a wrong implementation, the hint to give when the learner's matches it)


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


class _Raised:
    """What a call did instead of returning: the exception, and the line of the learner's code it came from."""

    def __init__(self, error: Exception):
        self.error = error
        self.line = traceback.extract_tb(error.__traceback__)[-1].lineno

    def same_as(self, other: Any) -> bool:
        return (isinstance(other, _Raised) and type(other.error) is type(self.error)
                and str(other.error) == str(self.error))


class _NotImplemented(Exception):
    def __init__(self, function: str):
        self.function = function


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(i) for i in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _call(fn: Callable, case: Case) -> Any:
    """``fn`` on copies of the case's arguments (an in-place edit must not change what the reference sees):
    its result, or a ``_Raised``; a stub that raises NotImplementedError raises ``_NotImplemented``."""
    try:
        return fn(*_clone(case.args), **_clone(case.kwargs))
    except NotImplementedError as e:
        where = traceback.extract_tb(e.__traceback__)[-1].name  # the learner's function that is still a stub
        raise _NotImplemented(where) from None
    except Exception as e:  # a learner's bug: reported as a hint, never a crash
        return _Raised(e)


def _outcomes(fn: Callable, cases: Sequence[Case]) -> list:
    """``fn``'s result on each case, up to and including the first one that raises."""
    outs = []
    for case in cases:
        outs.append(_call(fn, case))
        if isinstance(outs[-1], _Raised):
            break
    return outs


def _as_number(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1 and x.is_floating_point():
        return float(x)
    return None


def _same(got: Any, wrong: Any, atol: float, rtol: float) -> bool:
    """Does the learner's outcome equal a mistake's (the same error, or the same values)?"""
    if isinstance(got, _Raised) or isinstance(wrong, _Raised):
        return isinstance(got, _Raised) and got.same_as(wrong)
    g, w = _as_number(got), _as_number(wrong)
    if g is not None and w is not None:  # a float and a 0-dim tensor hold the same answer
        return g == w or abs(g - w) <= atol + rtol * abs(w)
    return _compare(got, wrong, atol, rtol) is None


def _matching(outs: list, cases: Sequence[Case], mistakes: Sequence[Mistake], atol: float, rtol: float) -> str | None:
    for wrong_fn, hint in mistakes:
        try:
            if all(_same(o, _call(wrong_fn, c), atol, rtol) for o, c in zip(outs, cases)):
                return hint
        except _NotImplemented:
            continue
    return None


def matching_mistake(learner_fn: Callable, cases: Sequence[Case], mistakes: Sequence[Mistake],
                     atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """The hint of the first mistake whose outcome (values, or error) equals the learner's on every case, or None."""
    try:
        outs = _outcomes(learner_fn, cases)
    except _NotImplemented:
        return None
    return _matching(outs, cases, mistakes, atol, rtol)


def _not_implemented(name: str, function: str) -> bool:
    function = function if function.isidentifier() else name  # a lambda or a module-level raise
    print(f"❌ {name}: not implemented yet: write the body of `{function}` (it still raises "
          f"NotImplementedError), then run this check again.")
    return False


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for i in x for t in _tensors(i)]
    return []


def _nonfinite(got: Any, want: Any) -> bool:
    """True if the learner's output holds nan/inf where the reference's does not."""
    g, w = _tensors(got), _tensors(want)
    if len(g) != len(w):
        return False
    for gt, wt in zip(g, w):
        if gt.shape == wt.shape and gt.is_floating_point():
            if (~torch.isfinite(gt.detach()) & torch.isfinite(wt)).any():
                return True
    return False


def check_close(
    name: str,
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    hint: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    mistakes: Sequence[Mistake] = (),
    nonfinite_hint: str | None = None,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on every case; print a pass message or a hint.

    ``mistakes`` are ``(wrong_fn, hint)`` pairs: a learner who matches ``wrong_fn`` gets its hint.
    ``nonfinite_hint``: nan/inf where the reference has none is reported first, with this hint."""
    passed = _check_close(name, learner_fn, reference_fn, cases, hint, atol, rtol, mistakes, nonfinite_hint)
    _record(name, passed)
    return CheckResult(passed)


def _check_close(name, learner_fn, reference_fn, cases, hint, atol, rtol, mistakes, nonfinite_hint) -> bool:
    try:
        outs = _outcomes(learner_fn, cases)
    except _NotImplemented as e:
        return _not_implemented(name, e.function)
    specific = _matching(outs, cases, mistakes, atol, rtol)  # the hint of the learner's typical mistake, if any
    wants = [reference_fn(*case.args, **case.kwargs) if not isinstance(got, _Raised) else None
             for got, case in zip(outs, cases)]
    if nonfinite_hint is not None:  # nan/inf from the learner: say so before comparing numbers
        for got, want, case in zip(outs, wants, cases):
            if not isinstance(got, _Raised) and _nonfinite(got, want):
                print(f"❌ {name}: case '{case.name}' gave nan or inf values. {specific or nonfinite_hint}".rstrip())
                return False
    hint = specific or hint
    for got, want, case in zip(outs, wants, cases):
        if isinstance(got, _Raised):
            e = got.error
            print(f"❌ {name}: case '{case.name}' raised {type(e).__name__}: {e} (line {got.line}). {hint}".rstrip())
            return False
        msg = _compare(got, want, atol, rtol)
        if msg:
            print(f"❌ {name}: case '{case.name}': {msg}. {hint}".rstrip())
            return False
    print(f"✅ {name}: all {len(cases)} cases pass.")
    return True


def check_true(name: str, condition_fn: Callable[[], bool | str], hint: str = "") -> CheckResult:
    """Check a free-form property: ``condition_fn`` returns True, or a string saying what is wrong."""
    passed = _check_true(name, condition_fn, hint)
    _record(name, passed)
    return CheckResult(passed)


def _check_true(name, condition_fn, hint) -> bool:
    try:
        result = condition_fn()
    except (NotImplementedError, _NotImplemented) as e:
        function = e.function if isinstance(e, _NotImplemented) else traceback.extract_tb(e.__traceback__)[-1].name
        return _not_implemented(name, function)
    except Exception as e:
        print(f"❌ {name}: raised {type(e).__name__}: {e}. {hint}".rstrip())
        return False
    if result is True:
        print(f"✅ {name}: correct.")
        return True
    detail = result if isinstance(result, str) else "the condition does not hold"
    print(f"❌ {name}: {detail}. {hint}".rstrip())
    return False


# --- which exercises passed: a small record in the cache ----------------------------

PROGRESS_FILE = "checks_progress.json"
_MAX_RECORDS = 5000  # the oldest are dropped beyond this


def _progress_path():
    from labkit.data import cache_dir

    return cache_dir() / PROGRESS_FILE


def _read_records() -> list[dict]:
    try:
        records = json.loads(_progress_path().read_text(encoding="utf-8"))["checks"]
        return [r for r in records if isinstance(r, dict) and "name" in r and "passed" in r]
    except Exception:  # missing, unreadable or from another version: start afresh
        return []


def _record(name: str, passed: bool) -> None:
    """Add (name, passed, time) to the progress file; a file that cannot be written is skipped silently.
    ``LABKIT_PROGRESS=off`` records nothing (``make test`` sets it, so test runs stay out of a learner's record)."""
    if os.environ.get("LABKIT_PROGRESS", "").strip().lower() in ("off", "0", "no", "false"):
        return
    try:
        from labkit._io import atomic_write_text

        records = _read_records()
        records.append({"name": name, "passed": bool(passed), "time": datetime.now().isoformat(timespec="seconds")})
        atomic_write_text(_progress_path(), json.dumps({"version": 1, "checks": records[-_MAX_RECORDS:]}))
    except Exception:
        pass  # a read-only cache, a full disk...: the exercise itself must go on


def progress(verbose: bool = True) -> dict:
    """Which exercises were checked in this environment, and how the latest check of each went.

    Prints a short summary (unless ``verbose=False``) and returns ``{"attempted": [...], "passed": [...],
    "failing": [...], "checks": n}``: names in the order first tried; ``failing`` are those whose
    latest check failed."""
    records = _read_records()
    latest: dict[str, bool] = {}
    for r in records:
        latest[r["name"]] = bool(r["passed"])  # dicts keep first-insertion order: the order first tried
    summary = {"attempted": list(latest), "passed": [n for n, ok in latest.items() if ok],
               "failing": [n for n, ok in latest.items() if not ok], "checks": len(records)}
    if verbose:
        print(f"Exercises checked: {len(summary['attempted'])} attempted, {len(summary['passed'])} passed, "
              f"{len(summary['failing'])} still failing.")
        if summary["passed"]:
            print("  passed:        " + ", ".join(summary["passed"]))
        if summary["failing"]:
            print("  still failing: " + ", ".join(summary["failing"]))
    return summary


def reset_progress() -> None:
    """Forget every recorded check (deletes the progress file)."""
    try:
        _progress_path().unlink(missing_ok=True)
    except OSError:
        pass


def random_cases(shapes: Iterable[tuple], seed: int = 0, n_args: int = 2) -> list[Case]:
    """One case per shape, each with ``n_args`` seeded standard-normal tensors of that shape."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        args = tuple(torch.randn(*shape, generator=g) for _ in range(n_args))
        out.append(Case(f"shape {shape}", args))
    return out

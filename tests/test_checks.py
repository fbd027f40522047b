"""Checkers must pass the reference solution and fail, with a specific hint, on wrong answers; a stub gets
no hint, only what to write; every check is recorded, and checks.progress() summarises the record."""

import json

import pytest
import torch

from labkit import checks

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a private cache: the progress file lands there

MSE_HINT = "square the difference, then take the mean over *all* elements"  # the general hint


def test_warmup_mse_passes_solution(capsys):
    assert checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).mean())
    assert "✅ mse" in capsys.readouterr().out


def test_warmup_mse_hints(capsys):
    assert not checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).sum())
    out = capsys.readouterr().out
    assert "❌ mse" in out and "values differ" in out and ".sum() adds the squared errors up" in out
    assert MSE_HINT not in out  # a targeted hint replaces the general one
    assert not checks.check_warmup_mse(lambda p, t: (p - t).abs().mean())
    assert "that is the mean ABSOLUTE error" in capsys.readouterr().out
    assert not checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).mean(dim=-1))
    out = capsys.readouterr().out
    assert "expected shape ()" in out and MSE_HINT in out  # no typical mistake matches: the general hint

    def mse(p, t):
        raise NotImplementedError

    assert not checks.check_warmup_mse(mse)
    out = capsys.readouterr().out
    assert out.strip() == ("❌ mse: not implemented yet: write the body of `mse` (it still raises "
                           "NotImplementedError), then run this check again.")
    assert not checks.check_warmup_mse(lambda p, t: p.foo)
    assert "raised AttributeError" in capsys.readouterr().out


def test_check_close_compares_structures(capsys):
    cases = [checks.Case("c", (torch.arange(4),))]
    assert checks.check_close("pair", lambda x: (x, x * 2), lambda x: (x, x * 2), cases)
    assert not checks.check_close("pair", lambda x: (x, x * 3), lambda x: (x, x * 2), cases)
    assert "item 1" in capsys.readouterr().out


def test_mistakes_match_values_or_the_same_error(capsys):
    cases = [checks.Case("x=2", (torch.tensor(2.0),)), checks.Case("x=3", (torch.tensor(3.0),))]
    mistakes = [(lambda x: x * 3, "Hint: tripled."), (lambda x: x.nope(), "Hint: no such method.")]
    assert not checks.check_close("double", lambda x: x * 3, lambda x: x * 2, cases, "Hint: general.",
                                  mistakes=mistakes)
    out = capsys.readouterr().out
    assert "tripled" in out and "general" not in out
    assert not checks.check_close("double", lambda x: x.nope(), lambda x: x * 2, cases, "Hint: general.",
                                  mistakes=mistakes)
    out = capsys.readouterr().out
    assert "raised AttributeError" in out and "no such method" in out
    assert not checks.check_close("double", lambda x: x * 4, lambda x: x * 2, cases, "Hint: general.",
                                  mistakes=mistakes)
    assert "general" in capsys.readouterr().out
    # a mistake must match on EVERY case: right on the first case, tripled on the second is not "tripled"
    assert not checks.check_close("double", lambda x: x * 2 if x < 2.5 else x * 3, lambda x: x * 2, cases,
                                  "Hint: general.", mistakes=mistakes)
    assert "general" in capsys.readouterr().out


def test_learners_in_place_edits_do_not_reach_the_reference(capsys):
    def in_place(x):
        x.mul_(2)
        return x

    cases = [checks.Case("c", (torch.ones(3),))]
    assert checks.check_close("double", in_place, lambda x: x * 2, cases)
    assert torch.equal(cases[0].args[0], torch.ones(3))


def test_check_true(capsys):
    assert checks.check_true("prop", lambda: True)
    assert not checks.check_true("prop", lambda: "rows must sum to 1", hint="Hint: softmax over the last dim")
    out = capsys.readouterr().out
    assert "rows must sum to 1" in out and "softmax" in out

    def condition():
        raise NotImplementedError

    assert not checks.check_true("prop", condition, hint="Hint: softmax over the last dim")
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "softmax" not in out


def test_nan_output_is_reported_not_crashed(capsys):
    assert not checks.check_warmup_mse(lambda p, t: ((p - t) ** 2).mean() * float("nan"))
    assert "values differ" in capsys.readouterr().out


# --- the progress record --------------------------------------------------------------------


def _mse(p, t):
    return ((p - t) ** 2).mean()


def test_every_check_is_recorded_and_summarised(isolated_cache, capsys):
    checks.reset_progress()
    assert checks.progress(verbose=False) == {"attempted": [], "passed": [], "failing": [], "checks": 0}
    checks.check_warmup_mse(lambda p, t: (p - t).sum())
    checks.check_softmax(lambda x: torch.softmax(x, -1))
    checks.check_warmup_mse(_mse)  # mse: failed, then passed
    checks.check_split_heads(lambda x, h: x)  # still failing
    capsys.readouterr()
    summary = checks.progress()
    out = capsys.readouterr().out
    assert summary == {"attempted": ["mse", "softmax", "split_heads"], "passed": ["mse", "softmax"],
                       "failing": ["split_heads"], "checks": 4}
    assert "3 attempted, 2 passed, 1 still failing" in out and "still failing: split_heads" in out
    record = json.loads((isolated_cache / "checks_progress.json").read_text())["checks"]
    assert [(r["name"], r["passed"]) for r in record] == [("mse", False), ("softmax", True), ("mse", True),
                                                          ("split_heads", False)]
    assert all(len(r["time"]) == 19 for r in record)  # e.g. 2025-01-31T12:34:56
    checks.reset_progress()
    assert checks.progress(verbose=False)["checks"] == 0


def test_a_failed_check_that_passes_later_counts_as_passed_and_vice_versa(isolated_cache, capsys):
    checks.reset_progress()
    checks.check_warmup_mse(_mse)
    checks.check_warmup_mse(lambda p, t: (p - t).sum())
    assert checks.progress(verbose=False)["failing"] == ["mse"]  # the latest check decides


def test_an_unwritable_cache_never_breaks_a_check(isolated_cache, monkeypatch, capsys):
    isolated_cache.mkdir(parents=True, exist_ok=True)
    (isolated_cache / "checks_progress.json").write_text("{not json")  # a damaged file is started afresh
    assert checks.check_warmup_mse(_mse)
    assert checks.progress(verbose=False)["passed"] == ["mse"]

    import labkit._io

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(labkit._io, "atomic_write_text", refuse)
    assert checks.check_warmup_mse(_mse)  # still checks, still prints
    assert "✅ mse" in capsys.readouterr().out
    monkeypatch.setenv("LABKIT_CACHE_DIR", "/proc/no-such-dir/cache")  # cannot even be created
    assert not checks.check_warmup_mse(lambda p, t: p.sum())
    assert checks.progress(verbose=False)["checks"] == 0
    checks.reset_progress()


def test_progress_recording_can_be_switched_off(tmp_path, monkeypatch):
    from labkit import checks

    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    checks.reset_progress()
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    checks.check_true("switched off", lambda: True)
    assert checks.progress(verbose=False)["checks"] == 0
    monkeypatch.delenv("LABKIT_PROGRESS")
    checks.check_true("switched on", lambda: True)
    assert checks.progress(verbose=False)["attempted"] == ["switched on"]

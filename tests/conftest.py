import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Skips that a machine may legitimately need: hardware this machine does not have.
HARDWARE_SKIPS = ("CUDA", "GPU", "MPS")


def pytest_configure(config):
    # Use the pre-seeded copy of the data sets when it sits beside the checkout (CI, this lab's machines).
    if not os.environ.get("LABKIT_DATA_DIR") and SHARED_DATA.is_dir():
        os.environ["LABKIT_DATA_DIR"] = str(SHARED_DATA)
    # The checks the tests run stay out of the learner's exercise record (tests of the record use isolated_cache).
    os.environ.setdefault("LABKIT_PROGRESS", "off")
    # No classroom kit and no published one: a test that wants one serves it itself (tests/test_zoo_kit.py).
    os.environ.setdefault("LABKIT_KIT_URL", "off")
    # Without a GPU Triton can only interpret its kernels, and it reads this when first imported (by anything:
    # torch.profiler imports it), so it is set before any test runs (tests/test_flash_triton.py).
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
    except ImportError:
        pass


def _fail_skip_under_ci(report) -> None:
    """Under CI=true a test skipped for missing data or a missing test dependency fails instead:
    a green run must mean that everything ran. Skips for absent hardware (a GPU) stay skips."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes") or not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(word in reason for word in HARDWARE_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"CI=true: skipped ({reason}). Under CI a missing data set or test dependency is a "
                       "failure: install it (make test does) or pre-seed LABKIT_DATA_DIR.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level pytest.importorskip skips the whole file at collection
    _fail_skip_under_ci(outcome.get_result())


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private, empty cache and no pre-seeded folder: every fetch must download; exercise checks are recorded."""
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LABKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("LABKIT_PROGRESS", raising=False)
    return tmp_path / "cache"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on a 2-core machine: one torch thread each, or they fight over the cores.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def short_clip():
    """A short clip-digits run (about 10 s), shared by the CLIP recipe's tests and the text-to-image recipe's."""
    import dataclasses

    from labkit.recipes import clip_digits as cd

    recipe = dataclasses.replace(cd.CLIP_DIGITS, steps=150, batch_size=64, warmup_steps=15, image_width=32)
    return cd.train_clip_digits(recipe, progress=False)


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    """A private cache, the shared pre-seeded data sets if any, no kit address, and test models registered."""
    from labkit import zoo
    from zoo_fixtures import TRAINED, build, train

    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_KIT_URL", "off")
    monkeypatch.setattr(zoo, "_verified", {})
    monkeypatch.setattr(zoo, "_warned", set())
    zoo.available()  # the built-in recipes registered first, then a copy of the table that the test may change
    monkeypatch.setattr(zoo, "_RECIPES", dict(zoo._RECIPES))
    zoo.register(zoo.Recipe("kit-a", "a", build=build, train=train, minutes_cpu=0.1), overwrite=True)
    zoo.register(zoo.Recipe("kit-b", "b needs a", build=build, train=lambda a: train(0.25), needs=("kit-a",)),
                 overwrite=True)
    TRAINED.clear()
    return tmp_path / "cache"

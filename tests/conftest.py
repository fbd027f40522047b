import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    # Use the pre-seeded copy of the data sets when it sits beside the checkout (CI, this lab's machines).
    if not os.environ.get("LABKIT_DATA_DIR") and SHARED_DATA.is_dir():
        os.environ["LABKIT_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private, empty cache and no pre-seeded folder: every fetch must download."""
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LABKIT_DATA_DIR", raising=False)
    return tmp_path / "cache"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on a 2-core machine: one torch thread each, or they fight over the cores.
    import torch

    torch.set_num_threads(1)

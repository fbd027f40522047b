"""tools/wheelhouse.py: wheels downloaded for each platform of a room install from that folder alone, with no index;
with a wheel missing, the offline resolution fails. (`make wheelhouse` builds the real one, about 0.4 GB a
platform: here a small requirement set shows the mechanism.)"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "tools" / "wheelhouse.py")
wheelhouse = importlib.util.module_from_spec(spec)
sys.modules["wheelhouse"] = wheelhouse
spec.loader.exec_module(wheelhouse)

pytestmark = pytest.mark.skipif(not wheelhouse.check_install.index_reachable(),
                                reason="the public package index is unreachable")
REQUIREMENTS = ["six", "pywinpty; os_name == 'nt'"]  # one package everywhere, one on Windows only


@pytest.mark.parametrize("platform", ["linux-x86_64", "windows-amd64", "macos-arm64"])
def test_a_platforms_wheelhouse_installs_without_an_index(platform, tmp_path):
    folder = tmp_path / platform
    wheelhouse.download(platform, folder, REQUIREMENTS, sys.executable, "3.11", None)
    names = sorted(p.name.split("-")[0] for p in folder.iterdir())
    assert names == (["pywinpty", "six"] if platform == "windows-amd64" else ["six"])
    ok, detail = wheelhouse.resolves_offline(platform, folder, REQUIREMENTS, sys.executable, "3.11", None)
    assert ok, detail
    next(folder.glob("six-*.whl")).unlink()
    ok, detail = wheelhouse.resolves_offline(platform, folder, REQUIREMENTS, sys.executable, "3.11", None)
    assert not ok and "six" in detail

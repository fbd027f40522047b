"""Is this environment ready for the lab? One check per thing a learner can get wrong, each with what to do.

    from labkit.environment import check_environment
    check_environment()          # prints a table: ok / warning / problem, and what to do about each

It checks: the Python version; that the lab is installed under its own name (``foundation-models-lab``) and that
``import labkit`` finds it; every package the lab needs, inside the versions it declares (torch also against the
range the lab was tested with); a writable cache; each data set (cached, pre-seeded in ``LABKIT_DATA_DIR``, or
downloadable now); the device PyTorch will use; and the Hugging Face hub's mode. Nothing is installed or changed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = ["DISTRIBUTION", "TESTED_PYTHON", "TESTED_TORCH", "Check", "check_environment"]

DISTRIBUTION = "foundation-models-lab"
TESTED_PYTHON = SpecifierSet(">=3.10,<3.14")  # the Pythons the install is checked on (tools/check_install.py)
TESTED_TORCH = SpecifierSet(">=2.9,<2.15")  # the torch releases the notebooks were run with
INSTALL = ('pip install -c constraints.txt -e ".[lab]"   (in the lab\'s folder; on Colab the first cell of a notebook '
           "installs it)")


@dataclass
class Check:
    """One line of the report: what was checked, what was found, and what to do if it is not ok."""

    what: str
    status: str  # "ok", "warning" or "problem"
    found: str
    advice: str = ""


def _python() -> Check:
    version = platform.python_version()
    if Version(version) < Version("3.10"):
        return Check("Python", "problem", version, "the lab needs Python 3.10 or newer: install one (python.org, "
                     "or conda) and create the environment again with it")
    if version not in TESTED_PYTHON:
        return Check("Python", "warning", version, f"the lab is tested on Python {TESTED_PYTHON}; if a package "
                     "fails to install or import, use Python 3.11")
    return Check("Python", "ok", version)


def _the_lab() -> list[Check]:
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return [Check("the lab's package", "problem", "not installed", f"install it: {INSTALL}")]
    import labkit

    where = Path(labkit.__file__).resolve().parent
    checks = [Check("the lab's package", "ok", f"{DISTRIBUTION} {version}")]
    if labkit.__version__ != version:
        checks.append(Check("import labkit", "problem", f"labkit {labkit.__version__} from {where}",
                            f"`import labkit` finds another package than {DISTRIBUTION} {version} (an unrelated "
                            f"'labkit' from the package index?): pip uninstall labkit, then {INSTALL}"))
    else:
        checks.append(Check("import labkit", "ok", str(where)))
    return checks


def _requirements() -> list[Check]:
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    checks = []
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's package, or one for another platform
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            checks.append(Check(req.name, "problem", "missing", f"install the lab's dependencies: {INSTALL}"))
            continue
        local = Version(version).public  # 2.13.0+cpu is 2.13.0
        if not req.specifier.contains(local, prereleases=True):
            checks.append(Check(req.name, "problem", version, f"the lab needs {req.name}{req.specifier}: {INSTALL}"))
        elif req.name == "torch" and local not in TESTED_TORCH:
            checks.append(Check("torch", "warning", version, f"newer than the releases the lab was tested with "
                                f"({TESTED_TORCH}); if something breaks, install torch==2.13.0"))
        else:
            checks.append(Check(req.name, "ok", version))
    return checks


def _cache() -> Check:
    from .data import cache_dir

    try:
        where = cache_dir()
        with tempfile.NamedTemporaryFile(dir=where):
            pass
    except OSError as e:
        return Check("cache", "problem", str(e), "the lab keeps downloads and trained models there: point "
                     "LABKIT_CACHE_DIR at a folder you can write to")
    return Check("cache", "ok", f"{where} (writable)")


def _reachable(url: str, timeout: float) -> bool:
    from .data import _USER_AGENT

    try:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status < 400
    except OSError:
        return False


def _datasets(timeout: float) -> list[Check]:
    from .data import REGISTRY, cache_dir

    checks = []
    seeded = os.environ.get("LABKIT_DATA_DIR")
    for ds in REGISTRY.values():
        if seeded and (Path(seeded).expanduser() / ds.filename).is_file():
            checks.append(Check(f"data: {ds.name}", "ok", "pre-seeded (LABKIT_DATA_DIR)"))
        elif (cache_dir() / ds.filename).is_file():
            checks.append(Check(f"data: {ds.name}", "ok", "cached"))
        elif any(_reachable(url, timeout) for url in ds.urls):
            checks.append(Check(f"data: {ds.name}", "ok", "downloadable (fetched on first use)"))
        else:
            checks.append(Check(f"data: {ds.name}", "warning", "not here and its address is unreachable",
                                f"copy {ds.filename} into a folder and set LABKIT_DATA_DIR to it (data/README.md)"))
    return checks


def _device() -> Check:
    import torch

    from .device import get_device

    try:
        device = get_device()
    except (ValueError, RuntimeError) as e:
        return Check("device", "problem", os.environ.get("LABKIT_DEVICE", ""), str(e))
    if device.type == "cuda":
        return Check("device", "ok", f"cuda: {torch.cuda.get_device_name(device)}")
    if device.type == "mps":
        return Check("device", "ok", "mps: the Apple GPU")
    forced = " (LABKIT_DEVICE=cpu)" if os.environ.get("LABKIT_DEVICE") == "cpu" else ""
    return Check("device", "ok", f"cpu{forced}: every notebook runs on it at its default settings")


def _hub() -> Check:
    from . import hub

    try:
        mode = hub.mode()
    except ValueError as e:
        return Check("Hugging Face hub", "problem", os.environ.get("LABKIT_HUB", ""), str(e))
    meaning = {"auto": "used when it answers (GPT-2 in notebooks 08 and 12)", "offline": "its local cache only",
               "off": "not used: the GPT-2 parts are skipped"}[mode]
    return Check("Hugging Face hub", "ok", f"{mode}: {meaning}")


def check_environment(network: bool = True, timeout: float = 3.0, show: bool = True) -> list[Check]:
    """Check this environment for the lab and print a report; return the checks. ``network=False`` skips the
    probes of the data sets' addresses."""
    checks = [_python(), *_the_lab(), *_requirements(), _cache()]
    checks += _datasets(timeout) if network else []
    checks += [_device(), _hub()]
    if show:
        mark = {"ok": "ok  ", "warning": "WARN", "problem": "FAIL"}
        for c in checks:
            print(f"{mark[c.status]}  {c.what:28s} {c.found}")
            if c.advice and c.status != "ok":
                print(f"{'':6}{'':28s} -> {c.advice}")
        bad = sum(c.status == "problem" for c in checks)
        print(f"\n{len(checks)} checks: " + (f"{bad} problem(s) to fix first (see ->)" if bad else "ready") + ".")
    return checks


if __name__ == "__main__":  # python -m labkit.environment
    sys.exit(1 if any(c.status == "problem" for c in check_environment()) else 0)

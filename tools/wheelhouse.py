"""A wheelhouse for a classroom without internet: every package `make lab` installs, for each platform in the room,
with PyTorch's CPU-only build, so that learners install from a USB stick or a shared folder and no index.

    python tools/wheelhouse.py                                   # linux-x86_64, macos-arm64, windows-amd64
    python tools/wheelhouse.py --platform linux-x86_64 --python 3.12.8
    python tools/wheelhouse.py --torch-wheel torch-2.13.0+cpu-...whl   # a local copy of the Linux CPU wheel

`make wheelhouse` runs the first. It writes wheelhouse/<platform>-py<version>/ with the wheels of torch and the lab
(`.[lab]`, at the versions of constraints.txt), the lab's own wheel, and setuptools (to install the lab editable),
then checks, for each platform, that the whole install resolves from that folder alone (`pip install --dry-run
--no-index --find-links`). A learner then runs, in the lab's folder:

    pip install --no-index --find-links WHEELHOUSE -c constraints.txt torch
    pip install --no-index --find-links WHEELHOUSE -c constraints.txt -e ".[lab]"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform as platform_module
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_install", ROOT / "tools" / "check_install.py")
check_install = importlib.util.module_from_spec(_spec)
sys.modules["check_install"] = check_install
_spec.loader.exec_module(check_install)

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PLATFORMS = {  # route name -> (pip's --platform tags, marker environment)
    "linux-x86_64": ([f"manylinux_2_{v}_x86_64" for v in range(35, 16, -1)] + ["manylinux2014_x86_64", "linux_x86_64"],
                     {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                      "os_name": "posix", "platform_release": "6.8.0", "platform_version": ""}),
    **{name: (check_install.PLATFORMS[name], check_install.MARKER_ENVIRONMENTS[name])
       for name in ("macos-arm64", "windows-amd64", "linux-aarch64")},
}


def _pip(python: str, marker_env: dict, *args: str, python_version: str | None = None) -> subprocess.CompletedProcess:
    if python_version:  # markers such as `python_full_version >= "3.11.5"` judged for the learners' Python
        marker_env = {**marker_env, "python_full_version": python_version,
                      "python_version": ".".join(python_version.split(".")[:2])}
    cmd = [python, "-c", check_install.PIP_AS, json.dumps(marker_env), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=check_install._clean_env(), timeout=3600)


def _target(platform: str, python_version: str) -> list[str]:
    tags, _ = PLATFORMS[platform]
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            *[a for t in tags for a in ("--platform", t)]]


def download(platform: str, out: Path, requirements: list[str], python: str, python_version: str,
             constraints: Path | None, extra_index: str | None = None) -> None:
    """pip download ``requirements`` (and what they need) for ``platform`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["download", "--isolated", "--quiet", "-d", str(out), "--index-url", check_install.INDEX,
            *_target(platform, python_version), *(["-c", str(constraints)] if constraints else []),
            *(["--extra-index-url", extra_index] if extra_index else []), *requirements]
    proc = _pip(python, PLATFORMS[platform][1], *args, python_version=python_version)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download for {platform} failed:\n{proc.stderr[-3000:]}")


def resolves_offline(platform: str, folder: Path, requirements: list[str], python: str, python_version: str,
                     constraints: Path | None) -> tuple[bool, str]:
    """Does the install resolve from ``folder`` alone, with no index at all?"""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["install", "--isolated", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(folder),
                "--report", str(Path(tmp) / "r.json"), *_target(platform, python_version),
                *(["-c", str(constraints)] if constraints else []), *requirements]
        proc = _pip(python, PLATFORMS[platform][1], *args, python_version=python_version)
        if proc.returncode != 0:
            lines = (proc.stdout + proc.stderr).splitlines()
            return False, "\n".join(line for line in lines if line.startswith("ERROR"))
        installs = json.loads((Path(tmp) / "r.json").read_text())["install"]
        return True, f"{len(installs)} packages"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                    help="repeatable; default: linux-x86_64, macos-arm64, windows-amd64")
    ap.add_argument("--python", default=platform_module.python_version(),
                    help="the learners' Python version, with its patch level (default: this Python's)")
    ap.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    ap.add_argument("--torch-wheel", type=Path, help="a local copy of the Linux x86-64 CPU wheel of torch")
    args = ap.parse_args(argv)
    platforms = args.platform or ["linux-x86_64", "macos-arm64", "windows-amd64"]
    constraints = ROOT / "constraints.txt"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = check_install.build_wheel(Path(tmp))
        failed = 0
        for platform in platforms:
            folder = args.out / f"{platform}-py{args.python}"
            requirements = ["torch", f"{wheel}[lab]", "setuptools>=64"]
            if platform == "linux-x86_64" and args.torch_wheel:  # the CPU build, from a local copy
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy2(args.torch_wheel, folder)
                download(platform, folder, [str(args.torch_wheel), f"{wheel}[lab]", "setuptools>=64"], sys.executable,
                         args.python, constraints)
            else:
                download(platform, folder, requirements, sys.executable, args.python, constraints,
                         CPU_INDEX if platform.startswith("linux") else None)
            shutil.copy2(wheel, folder)
            ok, detail = resolves_offline(platform, folder, ["torch", "foundation-models-lab[lab]", "setuptools>=64"],
                                          sys.executable, args.python, constraints)
            size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            print(f"{'ok  ' if ok else 'FAIL'} {folder}: {size:,.0f} MB; from this folder alone: {detail}")
            failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

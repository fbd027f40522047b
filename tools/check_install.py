"""Would a learner's install resolve? pip's own resolver against the public package index alone, from metadata.

    python tools/check_install.py                    # every route below, with constraints.txt
    python tools/check_install.py --only host-3.11   # one of them

Each check is what a learner's machine does, without this machine's pip configuration or local wheels
(`pip --isolated`, the public index only), and downloads nothing it would install (`--dry-run`):

* host-3.X: `make lab` / `make test` / the README's pip route on this machine's platform, in a fresh virtual
  environment of each CPython 3.10-3.14 found here: torch, then the lab with its extras, with -c constraints.txt.
* macos-arm64, windows-amd64, linux-aarch64: the same for another platform: pip's --platform and binary wheels
  only (pip cannot build for another platform), and the environment markers of dependencies (`; sys_platform ==
  "win32"`, torch's `; platform_system == "Linux"`) evaluated as on that platform, which pip alone would evaluate
  as on this machine (MARKER_ENVIRONMENTS, applied by PIP_AS below).
* colab: Colab's route, the install cell of a notebook (no constraints), in an environment that already has an
  older torch from the supported range: pip must keep that torch.

tests/test_install.py runs them in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple"
DIST = "foundation-models-lab"
EXTRAS = "lab,test"
COLAB_TORCH = "2.9.1"  # the oldest release of the range pyproject.toml supports


@dataclass
class Result:
    route: str
    ok: bool
    detail: str  # what pip would install (name==version, ...) or pip's error
    installs: dict[str, str]


def index_reachable(timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(f"{INDEX}/pip/", timeout=timeout):
            return True
    except OSError:
        return False


def interpreters() -> dict[str, str]:
    """CPython 3.10-3.14 interpreters on this machine (PATH, then pyenv), by minor version."""
    found: dict[str, str] = {}
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in range(10, 15):
        version = f"3.{minor}"
        candidates = [shutil.which(f"python{version}")]
        candidates += sorted(str(p / "bin" / "python3") for p in pyenv.glob(f"{version}.*"))
        for exe in filter(None, candidates):
            try:
                out = subprocess.run([exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if out.returncode == 0 and out.stdout.strip() == version:
                found[version] = exe
                break
    return found


def _clean_env() -> dict[str, str]:
    """The environment of a learner's shell: no PIP_* settings of this machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}


def fresh_venv(python: str, where: Path) -> Path:
    """A new virtual environment with pip upgraded from the public index, as `make` does; its python."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, capture_output=True)
    py = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([str(py), "-m", "pip", "install", "--isolated", "--quiet", "--upgrade", "pip"],
                   check=True, capture_output=True, env=_clean_env())
    return py


def build_wheel(out: Path) -> Path:
    """The lab's own wheel, as pip would build it from the checkout (pure Python)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True)
    return next(out.glob("foundation_models_lab-*.whl"))


def dry_run(py: Path, requirements: list[str], report: Path, extra: list[str],
            markers: dict[str, str] | None = None) -> tuple[bool, str, dict[str, str]]:
    pip = [str(py), "-c", PIP_AS, json.dumps(markers)] if markers else [str(py), "-m", "pip"]
    cmd = [*pip, "install", "--isolated", "--dry-run", "--report", str(report), "--index-url", INDEX,
           *extra, *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=1800)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith(("ERROR", "The conflict"))), 0)
        return False, "\n".join(line for line in lines[first:] if "notice" not in line).strip(), {}
    items = json.loads(report.read_text())["install"]
    installs = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
    return True, ", ".join(f"{k}=={v}" for k, v in sorted(installs.items())), installs


PLATFORMS = {  # route -> pip's --platform tags: a Mac on macOS 14 (pip adds the older macOS versions itself), Windows,
    # and ARM Linux with glibc 2.35 (Ubuntu 22.04; pip does not add the older manylinux tags, so they are listed)
    "macos-arm64": ["macosx_14_0_arm64"],
    "windows-amd64": ["win_amd64"],
    "linux-aarch64": [f"manylinux_2_{v}_aarch64" for v in range(35, 16, -1)] + ["manylinux2014_aarch64",
                                                                               "linux_aarch64"],
}
MARKER_ENVIRONMENTS = {  # PEP 508 marker values of each platform (those that differ from machine to machine)
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                    "os_name": "posix", "platform_release": "24.0.0", "platform_version": ""},
    "windows-amd64": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
                      "os_name": "nt", "platform_release": "10", "platform_version": "10.0.22631"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64",
                      "os_name": "posix", "platform_release": "6.8.0", "platform_version": ""},
}
# Runs pip with its marker environment replaced: pip's vendored `packaging` evaluates every marker against
# default_environment(), looked up by name at each evaluation.
PIP_AS = """
import json, sys
import pip._vendor.packaging.markers as markers
_default, _target = markers.default_environment, json.loads(sys.argv.pop(1))
markers.default_environment = lambda: {**_default(), **_target}
from pip._internal.cli.main import main
sys.exit(main())
"""


def check_host(python: str, wheel: Path, constraints: Path, tmp: Path) -> Result:
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    py = fresh_venv(python, tmp / f"venv-{version}")
    ok, detail, installs = dry_run(py, ["torch", f"{wheel}[{EXTRAS}]"], tmp / f"host-{version}.json",
                                   ["--ignore-installed", "-c", str(constraints)])
    return Result(f"host-{version}", ok, detail, installs)


def check_platform(route: str, python: str, wheel: Path, constraints: Path, tmp: Path) -> Result:
    py = tmp / "venv-3.11" / "bin" / "python"
    if not py.exists():
        py = fresh_venv(python, tmp / "venv-3.11")
    version = subprocess.run([str(py), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    extra = ["--ignore-installed", "--only-binary=:all:", "--python-version", version, "--implementation", "cp",
             "-c", str(constraints)]
    for tag in PLATFORMS[route]:
        extra += ["--platform", tag]
    ok, detail, installs = dry_run(py, ["torch", f"{wheel}[{EXTRAS}]"], tmp / f"{route}.json", extra,
                                   MARKER_ENVIRONMENTS[route])
    return Result(route, ok, detail, installs)


def fake_installed(site: Path, name: str, version: str) -> None:
    """Make pip see `name==version` as installed (metadata only), as on a machine that already has it."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def check_colab(python: str, wheel: Path, tmp: Path) -> Result:
    """The notebooks' install cell (the package, no constraints) where torch COLAB_TORCH is already installed."""
    py = fresh_venv(python, tmp / "venv-colab")
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    fake_installed(site, "torch", COLAB_TORCH)
    ok, detail, installs = dry_run(py, [str(wheel)], tmp / "colab.json", [])
    if ok and "torch" in installs:
        ok, detail = False, f"pip would replace the installed torch {COLAB_TORCH} with torch {installs['torch']}"
    return Result("colab", ok, detail, installs)


def run(only: list[str] | None = None, constraints: Path | None = None) -> list[Result]:
    constraints = constraints or ROOT / "constraints.txt"
    pythons = interpreters()
    host = pythons.get("3.11") or next(iter(pythons.values()))
    routes = [f"host-{v}" for v in pythons] + list(PLATFORMS) + ["colab"]
    results = []
    with tempfile.TemporaryDirectory(prefix="check-install-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = build_wheel(tmp / "dist")
        for route in routes:
            if only and route not in only:
                continue
            if route.startswith("host-"):
                results.append(check_host(pythons[route[5:]], wheel, constraints, tmp))
            elif route in PLATFORMS:
                results.append(check_platform(route, host, wheel, constraints, tmp))
            else:
                results.append(check_colab(host, wheel, tmp))
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="one route (repeatable): host-3.11, macos-arm64, colab, ...")
    ap.add_argument("--constraints", type=Path, help="another constraints file than constraints.txt")
    args = ap.parse_args(argv)
    if not index_reachable():
        print(f"The public package index ({INDEX}) is unreachable: nothing checked.")
        return 2
    failed = 0
    for r in run(args.only, args.constraints):
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.route}: "
              + (f"{len(r.installs)} packages, torch=={r.installs.get('torch', '(kept)')}" if r.ok else r.detail))
        failed += not r.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

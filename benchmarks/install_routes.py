"""What installing the lab costs a learner: download size, time and disk, per route, measured in a fresh venv.

    python benchmarks/install_routes.py --route default        # torch from the public index (CUDA build on Linux)
    python benchmarks/install_routes.py --route cpu            # PyTorch's CPU-only build (download.pytorch.org)
    python benchmarks/install_routes.py --route cpu --torch-wheel torch-2.13.0+cpu-...whl   # the same wheel, local

Each route is what `make lab` does, as a learner's machine does it: a new virtual environment, pip upgraded, then
torch and the lab (`-e ".[lab]"`, with -c constraints.txt) from the public index only (`pip --isolated`, no cache:
every wheel is downloaded). Prints, and writes to benchmarks/results/install_<route>.json: seconds for each step,
the bytes downloaded (the sizes the index publishes for the wheels pip chose) and the venv's size on disk.
`--torch-wheel` stands in a local copy of the CPU wheel for download.pytorch.org where that index is unreachable
(the bytes are the same file's; its download time is then not included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}


def _pip(py: Path, *args: str, report: Path | None = None) -> float:
    cmd = [str(py), "-m", "pip", "install", "--isolated", "--no-cache-dir", "--quiet", "--index-url", INDEX, *args]
    if report:
        cmd += ["--report", str(report)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT)
    return time.perf_counter() - t0


def _sizes(report: Path) -> dict[str, int]:
    """Bytes of each archive pip downloaded, as the index publishes them (name -> bytes)."""
    out = {}
    for item in json.loads(report.read_text())["install"]:
        info = item.get("download_info", {})
        url = info.get("url", "")
        if not url.startswith("http"):
            continue  # the lab itself (a local folder) or a local wheel
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=60) as r:
            out[item["metadata"]["name"]] = int(r.headers["Content-Length"])
    return out


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--route", choices=["default", "cpu"], default="default")
    ap.add_argument("--torch-wheel", type=Path, help="a local copy of the CPU wheel, for --route cpu")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="install-route-") as tmp_name:
        tmp = Path(tmp_name)
        venv = tmp / "venv"
        t0 = time.perf_counter()
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        steps = {"venv and pip": _pip(py, "--upgrade", "pip") + (time.perf_counter() - t0)}
        torch_args = ["-c", "constraints.txt"]
        if args.route == "cpu":
            torch_args += [str(args.torch_wheel)] if args.torch_wheel else ["--extra-index-url", CPU_INDEX, "torch"]
        else:
            torch_args += ["torch"]
        steps["torch"] = _pip(py, *torch_args, report=tmp / "torch.json")
        steps["the lab"] = _pip(py, "-c", "constraints.txt", "-e", ".[lab]", report=tmp / "lab.json")
        sizes = {**_sizes(tmp / "torch.json"), **_sizes(tmp / "lab.json")}
        if args.torch_wheel:
            sizes["torch (local copy of the CPU wheel)"] = args.torch_wheel.stat().st_size
        disk = _du(venv)
        result = {
            "route": args.route, "machine": f"{platform.machine()} {platform.system()}, Python "
            f"{platform.python_version()}", "seconds": {k: round(v, 1) for k, v in steps.items()},
            "total_seconds": round(sum(steps.values()), 1), "downloaded_mb": round(sum(sizes.values()) / 1e6, 1),
            "packages": len(sizes), "largest_mb": {k: round(v / 1e6, 1) for k, v in
                                                   sorted(sizes.items(), key=lambda kv: -kv[1])[:8]},
            "venv_mb": round(disk / 1e6, 1), "torch_wheel_stood_in": bool(args.torch_wheel),
            "date": time.strftime("%Y-%m-%d"),
        }
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks" / "results" / f"install_{args.route}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How much of each notebook nbval compares: `make nbval-coverage`.

A code cell is *compared* when nbval checks its saved outputs, *ignored* when it is marked
``# NBVAL_IGNORE_OUTPUT`` (run, output not compared: timings, progress bars, machine-dependent
samples) and *skipped* when marked ``# NBVAL_SKIP`` (not run). ``≈ figures`` counts the numbers
written after "≈" inside compared cells: measured figures whose digits the sanitizer masks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MEASURED = re.compile(r"≈\s*[-+]?(\d[\d,]*(\.\d*)?|\.\d+)")


def _text(output: dict) -> str:
    if "text" in output:
        return "".join(output["text"])
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))


def coverage(path: Path) -> dict:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    counts = {"code cells": len(cells), "compared": 0, "ignored": 0, "skipped": 0, "≈ figures": 0}
    for cell in cells:
        source = "".join(cell["source"])
        if "NBVAL_SKIP" in source:
            counts["skipped"] += 1
        elif "NBVAL_IGNORE_OUTPUT" in source:
            counts["ignored"] += 1
        else:
            counts["compared"] += 1
            counts["≈ figures"] += sum(len(MEASURED.findall(_text(o))) for o in cell.get("outputs", []))
    return counts


def main(folder: str) -> None:
    rows = {p.name: coverage(p) for p in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))}
    keys = ["code cells", "compared", "ignored", "skipped", "≈ figures"]
    print(f"{'notebook':<36}" + "".join(f"{k:>12}" for k in keys))
    for name, c in rows.items():
        print(f"{name:<36}" + "".join(f"{c[k]:>12}" for k in keys))
    total = {k: sum(c[k] for c in rows.values()) for k in keys}
    print(f"{'total':<36}" + "".join(f"{total[k]:>12}" for k in keys))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "notebooks")

"""Every exercise's hidden solution passes its checker, and no saved output gives the answer away.

THE EXERCISE FORMAT (notebooks 00-09, and every notebook added later). Three cells, in this order:

1. The STATEMENT: a markdown cell of its own that contains the word "Exercise" (e.g. a heading
   "### Exercise 2: attention with a mask"), and says what to write and what the checker tries. It is never
   inside the previous exercise's solution cell. If it counts the checker's cases ("the checker tries eight
   cases", "on 8 cases"), the count must equal the "all N cases pass" of the checker's ✅ line (tested).
2. The STUB: the next cell, a code cell. It defines the function(s) to write, with `# YOUR CODE HERE` and
   `raise NotImplementedError`, and calls the checker on one line of its own, at the start of the line:
       checks.check_softmax(softmax)          (or check_softmax(softmax) where the name was imported)
   The checker's arguments are names the solution defines, or literals. Its saved output (the untouched stub)
   says "not implemented yet" and which function to write, and holds no "Hint" (tested).
3. The SOLUTION: the next cell, a markdown cell that starts with
       <details><summary>Show a solution</summary>
   (collapsed on GitHub and in JupyterLab; any summary text containing "solution" is accepted), holds exactly
   one ```python fenced block, may go on with a few lines on the usual slips, and ends with </details>.
   The code block is self-contained: it may use `math`, `torch`, `F` (torch.nn.functional), `nn`, `checks` and
   the `check_*` functions without importing them; anything else it imports itself
   (e.g. `from labkit.layers import rotate_half`), so that it also runs pasted into a fresh cell.

This test finds every solution cell, runs its code block and then the stub's checker line(s) in a fresh
namespace, and requires the checker to print ✅ and return True; it also requires that no line of a
solution appears in any saved output of the notebook.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOLUTION_START = re.compile(r"^\s*<details>\s*<summary>(.*?)</summary>", re.S | re.I)
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
CHECK_LINE = re.compile(r"^(?:checks\.)?check_\w+\(.*\)\s*(#.*)?$")
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen".split())}
CASE_COUNT = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\s+(?:seeded\s+|test\s+)?cases\b", re.I)


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _output_text(cell: dict) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if "text" in o:
            parts.append("".join(o["text"]))
        for key in ("text/plain", "text/html", "text/markdown"):
            parts.append("".join(o.get("data", {}).get(key, "")))
        parts.append("\n".join(o.get("traceback", [])))
    return "\n".join(parts)


def _is_solution(cell: dict) -> bool:
    m = SOLUTION_START.match(_source(cell)) if cell["cell_type"] == "markdown" else None
    return bool(m and "solution" in m.group(1).lower())


def _exercises():
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            if _is_solution(cell):
                yield pytest.param(path, cells, i, id=f"{path.stem}-cell{i}")


EXERCISES = list(_exercises())


def _require(condition: bool, message: str) -> None:
    if not condition:
        pytest.fail(message, pytrace=False)


def _parts(cells: list[dict], i: int):
    solution, stub, statement = cells[i], cells[i - 1], cells[i - 2]
    blocks = CODE_BLOCK.findall(_source(solution))
    _require(len(blocks) == 1, f"the solution cell holds {len(blocks)} ```python blocks; the format wants exactly one")
    _require(_source(solution).rstrip().endswith("</details>"), "the solution cell must end with </details> "
             "(anything after it, such as the next exercise's statement, belongs in a cell of its own)")
    _require(stub["cell_type"] == "code", "the cell before a solution must be the exercise's stub (a code cell)")
    stub_src = _source(stub)
    _require("raise NotImplementedError" in stub_src, "the stub must raise NotImplementedError")
    check_lines = [line for line in stub_src.splitlines() if CHECK_LINE.match(line)]
    _require(bool(check_lines), "the stub must call its checker on a line of its own: checks.check_xxx(name)")
    _require(statement["cell_type"] == "markdown" and not _is_solution(statement),
             "the exercise's statement must be a markdown cell of its own, just before the stub, not inside "
             "the previous exercise's solution")
    _require("exercise" in _source(statement).lower(), "the statement cell must say 'Exercise'")
    return blocks[0], check_lines, stub, statement


def _namespace() -> dict:
    import math

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn

    from labkit import checks

    # the names the notebooks import that solutions use (notebook 16's all-reduce: torch.distributed as dist)
    ns = {"math": math, "torch": torch, "dist": dist, "F": F, "nn": nn, "checks": checks}
    ns.update({name: getattr(checks, name) for name in dir(checks) if name.startswith("check_")})
    return ns


@pytest.mark.parametrize("path, cells, i", EXERCISES)
def test_solution_passes_its_checker(path, cells, i, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))  # checks record progress: keep the learner's record clean
    code, check_lines, _, statement = _parts(cells, i)
    ns = _namespace()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{path.name}:solution-cell-{i}", "exec"), ns)
        results = [eval(compile(line.split("#")[0].strip(), f"{path.name}:stub-{i - 1}", "eval"), ns)
                   for line in check_lines]
    printed = out.getvalue()
    _require(all(bool(r) for r in results) and "✅" in printed and "❌" not in printed,
             f"the solution does not pass its checker: {printed.strip()}")
    stated = CASE_COUNT.findall(_source(statement))
    if stated:  # the statement counts the cases: the checker must run that many
        n = int(stated[0]) if stated[0].isdigit() else NUMBER_WORDS[stated[0].lower()]
        ran = re.findall(r"all (\d+) cases pass", printed)
        _require(bool(ran) and int(ran[0]) == n,
                 f"the statement says {n} cases, the checker printed: {printed.strip()}")


@pytest.mark.parametrize("path, cells, i", EXERCISES)
def test_saved_outputs_hold_no_solution(path, cells, i):
    code, _, stub, _ = _parts(cells, i)
    stub_out = _output_text(stub)
    _require("not implemented yet" in stub_out, f"the untouched stub's saved output should say so: {stub_out!r}")
    _require("hint" not in stub_out.lower(), f"the untouched stub's saved output gives a hint away: {stub_out!r}")
    lines = [ln.strip() for ln in code.splitlines()]
    lines = [ln for ln in lines if len(ln) >= 16 and not ln.startswith(("#", "def ", "import ", "from "))]
    everything = "\n".join(_output_text(c) for c in cells if c["cell_type"] == "code")
    leaked = [ln for ln in lines if ln in everything]
    _require(not leaked, f"saved outputs contain solution lines: {leaked}")

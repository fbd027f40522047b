"""The package's shape: its imports form no circle (counting the ones inside functions), no function is over 80
lines, the configs speak one vocabulary, and no recipe or task imports the zoo."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labkit"


def _module_name(file: Path) -> str:
    parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for f in sorted(PACKAGE.rglob("*.py"))}


def _imported(module: str, node: ast.AST) -> set[str]:
    """The labkit modules an import statement loads (``from .a import b`` is ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            found.add(f"{base}.{alias.name}")
        elif base in MODULES:
            found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the labkit modules it imports anywhere in its file (a package's own ``__init__`` left out)."""
    graph = {}
    for module, file in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(module, node)
        graph[module] = {m for m in edges if m != module and m != "labkit"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_imports_form_no_circle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_recipes_and_tasks_never_import_the_zoo():
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith(("labkit.recipes", "labkit.tasks", "labkit.models")):
            assert not {m for m in edges if m.startswith("labkit.zoo")}, module


def test_no_function_is_over_80_lines():
    long = []
    for module, file in MODULES.items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, long


OLD_NAMES = r"\b(n_embd|n_head|n_layer|block_size|max_position|attention_heads|key_padding_mask|return_attn)\b"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_one_vocabulary_outside_the_hugging_face_converters(module):
    """GPT-2's and PyTorch's names appear only where labkit reads their objects: inside a ``from_hf`` or
    ``from_torch`` converter (and the module that wraps PyTorch's attention for comparison)."""
    tree = ast.parse(MODULES[module].read_text())
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(("from_hf", "from_torch",
                                                                                                 "_from_hf", "_copy")):
            allowed.update(range(node.lineno, node.end_lineno + 1))
    source = MODULES[module].read_text().splitlines()
    bad = [f"{i}: {line.strip()}" for i, line in enumerate(source, 1)
           if i not in allowed and re.search(OLD_NAMES, line.split("#")[0])]
    assert not bad, bad

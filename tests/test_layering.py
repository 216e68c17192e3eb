"""The architecture as a test: layers import downwards only, and private names stay private.

Every ``import`` in ``src/medfool`` (at the top of a module or inside a function) is read from
the source and mapped to its layer; an import of a higher layer fails, as does importing a
name with a leading underscore from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "medfool"

# lowest first; a module may import its own layer and the ones before it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "utils", "vocab"),
    ("data",),
    ("models",),
    ("attacks", "wsi", "generative"),
    ("defences",),
    ("eval",),
    ("report",),
    ("runs", "audit"),
    ("serve", "cli"),
)


def layer_of(module: str) -> int:
    """The layer of ``medfool.X...`` (the package root holds only the version: the bottom)."""
    parts = module.split(".")
    if len(parts) < 2:
        return 0
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module}: its package {parts[1]!r} is in no layer; add it to LAYERS")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, src: Path = SRC) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported module, names) for every medfool import in the file."""
    here = module_name(path, src)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, ()) for a in node.names if a.name.split(".")[0] == "medfool"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] == "medfool":
                out.append((node.lineno, target, tuple(a.name for a in node.names)))
    return out


def facade_lines(path: Path) -> set[int]:
    """Lines of imports inside the package root's ``__getattr__``: the public facade
    (``medfool.wrap``) is looked up when first used, so no module depends on it at import time."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def upward_imports(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        here = module_name(path, src)
        facade = facade_lines(path) if path == src / "__init__.py" else set()
        for line, target, _ in imports(path, src):
            if line not in facade and layer_of(target) > layer_of(here):
                bad.append(f"{path.relative_to(src.parent)}:{line}: {here} imports {target} (a higher layer)")
    return bad


def private_imports(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        for line, target, names in imports(path, src):
            hidden = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if hidden:
                bad.append(f"{path.relative_to(src.parent)}:{line}: imports private {', '.join(hidden)} from {target}")
    return bad


def test_layers_import_downwards_only() -> None:
    assert upward_imports() == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports() == []


def test_the_vocabularies_import_nothing_from_medfool() -> None:
    """``medfool.vocab`` (the closed sets of words, as types) sits under every layer, errors included."""
    assert imports(SRC / "vocab.py") == []


def prints_outside_the_cli(src: Path = SRC) -> list[str]:
    """Calls of ``print`` below the command line (the library reports through logging and a
    run's ``say`` callback)."""
    bad = []
    for path in sorted(src.rglob("*.py")):
        if module_name(path, src).split(".")[1:2] == ["cli"]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{path.relative_to(src.parent)}:{node.lineno}: print() in library code")
    return bad


def test_the_library_never_prints() -> None:
    assert prints_outside_the_cli() == []


def test_the_check_catches_an_upward_and_a_private_import(tmp_path: Path) -> None:
    """The checks themselves can fail: a copy of a low module with an import of the report layer
    added, and one importing a private name."""
    pkg = tmp_path / "medfool"
    (pkg / "models").mkdir(parents=True)
    (pkg / "report").mkdir()
    (pkg / "models" / "train.py").write_text("def f():\n    from medfool.report.html import render\n")
    (pkg / "report" / "html.py").write_text("from medfool.models.train import _helper\n")
    assert [b.split(": ", 1)[1] for b in upward_imports(pkg)] == [
        "medfool.models.train imports medfool.report.html (a higher layer)"]
    assert [b.split(": ", 1)[1] for b in private_imports(pkg)] == ["imports private _helper from medfool.models.train"]


@pytest.mark.parametrize("module", ["medfool.attacks.base", "medfool.cli.main"])
def test_every_package_has_a_layer(module: str) -> None:
    assert 0 <= layer_of(module) < len(LAYERS)


def module_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the medfool modules it imports (at the top, inside functions or for type checking).
    ``from package import name`` counts as importing the submodule where ``name`` is one; an
    import that stops at a package's ``__init__`` is left out (a package re-exporting its
    modules is not a knot)."""
    files = {module_name(p, src): p for p in src.rglob("*.py") if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for _, target, names in imports(path, src):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            edges |= set(subs) or ({target} if target in files else set())
        graph[name] = edges - {name}
    return graph


def import_cycles(src: Path = SRC) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan): modules that import each other."""
    graph = module_graph(src)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def test_no_import_circles() -> None:
    assert import_cycles() == []


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "medfool" / "runs"
    pkg.mkdir(parents=True)
    (pkg / "attack.py").write_text("from medfool.runs.patch import run_patch\n")
    (pkg / "patch.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    from medfool.runs.attack import AttackJob\n")
    assert import_cycles(tmp_path / "medfool") == [["medfool.runs.attack", "medfool.runs.patch"]]


MAX_FUNCTION_LINES = 80


def long_functions(src: Path = SRC, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions (and methods) longer than ``limit`` lines, docstring included: a function that
    long does several jobs, and each job deserves a name."""
    bad = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    bad.append(f"{path.relative_to(src.parent)}:{node.lineno}: {node.name} has {length} lines")
    return bad


def test_no_function_does_several_jobs() -> None:
    assert long_functions() == []


def test_the_length_check_finds_a_long_function(tmp_path: Path) -> None:
    pkg = tmp_path / "medfool"
    pkg.mkdir()
    (pkg / "long.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    (pkg / "short.py").write_text("def g():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1))
    assert [b.split(": ", 1)[1] for b in long_functions(pkg)] == [f"f has {MAX_FUNCTION_LINES + 1} lines"]


LOADERS = {"load_classifier", "load_dataset", "load"}


def loading_in_cli(src: Path = SRC) -> list[str]:
    """Calls in cli/ that load a checkpoint or a dataset: the command line parses options into a
    job; runs/ loads, checks and runs it (so Python users get the same checks)."""
    bad = []
    for path in sorted((src / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = (node.func.id if isinstance(node.func, ast.Name)
                        else node.func.attr if isinstance(node.func, ast.Attribute) else "")
                if name in LOADERS:
                    bad.append(f"{path.relative_to(src.parent)}:{node.lineno}: {name}() in the command line")
    return bad


def test_the_command_line_loads_nothing() -> None:
    assert loading_in_cli() == []


def test_the_loading_check_finds_a_load_in_cli(tmp_path: Path) -> None:
    cli = tmp_path / "medfool" / "cli"
    cli.mkdir(parents=True)
    (cli / "train.py").write_text("def cmd(args):\n    dataset = data_source(args).load()\n"
                                  "    model, _ = load_classifier(args.model)\n")
    assert [b.split(": ", 1)[1] for b in loading_in_cli(tmp_path / "medfool")] == [
        "load() in the command line", "load_classifier() in the command line"]


def long_without_reason(src: Path = SRC, limit: int = 60) -> list[str]:
    """Functions over ``limit`` lines whose docstring does not say why they are kept whole."""
    bad = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit and "Kept whole:" not in (ast.get_docstring(node) or ""):
                    bad.append(f"{path.relative_to(src.parent)}:{node.lineno}: {node.name} has {length} lines")
    return bad


def test_a_function_over_60_lines_says_why() -> None:
    assert long_without_reason() == []

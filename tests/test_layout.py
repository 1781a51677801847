"""The layout cannot rot quietly: the captchakit package has no import cycles and never imports a
staged script, its lazy (in-function) imports are only the optional or heavy packages, no product
file or function grows past the size limits, and pyproject.toml ships what the package needs.

Everything here reads the source with ast and pyproject.toml with tomllib; nothing is trained.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captchakit"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = sorted(ROOT.glob("captcha_*.py"))  # the top-level staged scripts (and captcha_setting/cnn_model)

MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 50
MAX_PARAMETERS = 8  # self / cls not counted
# What a function may import lazily: optional extras and packages too heavy to load at import time.
LAZY_ALLOWED = {
    "torch",
    "torchvision",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "fastapi",
    "fastapi_offline",
    "starlette",
    "uvicorn",
    "captcha",
}
# Files pip must install inside the package (the shipped model and the web page).
DATA_FILES = ["models/default.pkl", "models/default.json", "models/general.pkl", "models/general.json", "web/index.html"]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def modules() -> dict[str, Path]:
    """Every module of captchakit: dotted name -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement run when `path` is used: (node, inside a function). Imports under
    `if TYPE_CHECKING:` are left out: they never run, so they cannot make a cycle."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for other in child.orelse:
                    visit_one(other, in_function)
                continue
            visit_one(child, in_function)

    def visit_one(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, in_function))
        visit(node, in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree(path), False)
    return found


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted modules `node` (in `module`) imports; `from a.b import c` gives a.b.c when c is a
    captchakit module, else a.b. Relative imports are resolved against `module`'s package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if modules()[module].name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    if not base.startswith("captchakit"):
        return [base]
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names]


@cache
def graph() -> dict[str, dict[str, str]]:
    """captchakit module -> {captchakit module it imports: where (file:line)}."""
    out = {}
    for name, path in modules().items():
        edges = {}
        for node, _ in imports(path):
            for target in imported_names(name, node):
                if (target == "captchakit" or target.startswith("captchakit.")) and target != name:
                    edges.setdefault(target, f"{rel(path)}:{node.lineno}")
        out[name] = edges
    return out


def strongly_connected(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Tarjan's components of the import graph with more than one module (each one holds a cycle)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in edges:
                continue
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def one_cycle(edges: dict[str, dict[str, str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of `component`: [a, b, ..., a]."""
    start, inside = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(edges[path[-1]]):
            if nxt == start:
                return [*path, start]
            if nxt in inside and nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    raise AssertionError(f"no cycle in {component}")


def describe(edges: dict[str, dict[str, str]], cycle: list[str]) -> str:
    steps = [f"{a} -> {b} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "; ".join(steps)


def test_captchakit_has_no_import_cycles():
    edges = graph()
    found = []
    for component in strongly_connected(edges):
        cycle = one_cycle(edges, component)
        found.append(f"cycle {' -> '.join(cycle)}: {describe(edges, cycle)} (all in the loop: {', '.join(component)})")
    assert not found, "import cycles inside captchakit:\n" + "\n".join(found)


def test_every_captchakit_import_names_a_module_that_exists():
    missing = []
    for name, path in modules().items():
        for node, _ in imports(path):
            for target in imported_names(name, node):
                if target.startswith("captchakit") and target not in modules():
                    missing.append(f"{rel(path)}:{node.lineno}: {target}")
    assert not missing, "imports of captchakit modules that do not exist:\n" + "\n".join(missing)


def test_captchakit_never_imports_a_staged_script():
    bad = []
    for name, path in modules().items():
        for node, _ in imports(path):
            for target in imported_names(name, node):
                if target.split(".")[0].startswith("captcha_"):
                    bad.append(f"{rel(path)}:{node.lineno}: imports {target}")
    assert not bad, "the package imports top-level scripts (scripts import the package, never the reverse):\n" + "\n".join(bad)


def test_lazy_imports_are_only_optional_or_heavy_packages():
    bad = []
    for name, path in modules().items():
        for node, in_function in imports(path):
            if not in_function:
                continue
            for target in imported_names(name, node):
                if target.split(".")[0] not in LAZY_ALLOWED:
                    bad.append(f"{rel(path)}:{node.lineno}: imports {target} inside a function")
    allowed = ", ".join(sorted(LAZY_ALLOWED))
    assert not bad, f"imports inside functions may only be of {allowed}; move these to the top of the file:\n" + "\n".join(bad)


def product_files() -> list[Path]:
    return [*modules().values(), *SCRIPTS]


def parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def test_no_product_file_or_function_is_too_big():
    bad = []
    for path in product_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES:
            bad.append(f"{rel(path)}: {lines} lines (at most {MAX_FILE_LINES})")
        for fn in ast.walk(tree(path)):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_FUNCTION_LINES:
                bad.append(f"{rel(path)}:{fn.lineno} {fn.name}(): {length} lines (at most {MAX_FUNCTION_LINES})")
            count = len(parameters(fn))
            if count > MAX_PARAMETERS:
                bad.append(f"{rel(path)}:{fn.lineno} {fn.name}(): {count} parameters (at most {MAX_PARAMETERS})")
    assert not bad, "too big (split it up):\n" + "\n".join(bad)


def test_every_subpackage_is_a_package_setuptools_finds():
    """packages.find only ships folders with an __init__.py: a folder of modules without one is left out of the wheel."""
    found = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"captchakit", "captchakit.*"} <= set(found)
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(rel(f) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders of modules without __init__.py (not installed by pip install .): {missing}"


def test_package_data_exists_and_pyproject_ships_it():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["captchakit"]
    missing = [f for f in DATA_FILES if not (PACKAGE / f).is_file()]
    assert not missing, f"package data missing from captchakit/: {missing}"
    # Every file in the package that is not Python is installed, the shipped model and page among them.
    data = sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )
    assert set(DATA_FILES) <= set(data)
    unshipped = [f for f in data if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not unshipped, f"files in captchakit/ that pyproject.toml's package-data does not install: {unshipped}"


def test_pyproject_installs_every_script_and_a_command_for_each():
    py_modules = set(PYPROJECT["tool"]["setuptools"]["py-modules"])
    assert py_modules == {p.stem for p in SCRIPTS}, "pyproject.toml's py-modules must be exactly the captcha_*.py files"
    runnable = {p.stem for p in SCRIPTS if "run_cli(main)" in p.read_text(encoding="utf-8")}
    declared = PYPROJECT["project"]["scripts"]
    assert {target.partition(":")[0] for target in declared.values()} == runnable, "one command per runnable script"
    for command, target in declared.items():
        module, _, function = target.partition(":")
        assert command == module.replace("_", "-") and function == "cli", (command, target)
        assert callable(getattr(importlib.import_module(module), function, None)), (command, target)


def test_pyproject_is_the_one_list_of_dependencies():
    project = PYPROJECT["project"]
    assert project["name"] == "captchakit" and project["requires-python"] == ">=3.11"
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(project["dependencies"])  # other versions: gigabytes
    extras = project["optional-dependencies"]
    assert {"serve", "onnx", "dev"} <= set(extras) and "captchakit[serve,onnx]" in extras["dev"]
    assert not list(ROOT.glob("requirements*.txt")), "pyproject.toml is the one list of dependencies"


@pytest.mark.parametrize("script", ["captcha_gen", "captcha_train", "captcha_predict"])
def test_console_commands_give_the_one_line_errors_of_the_scripts(script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script.replace("_", "-"), "--no-such-flag"])
    assert importlib.import_module(script).cli() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(": error: unrecognized arguments: --no-such-flag; see --help\n"), err


def test_the_checks_see_what_they_should(tmp_path):
    """The helpers above find what they look for (a check that cannot fail is a defect)."""
    edges = {"a": {"b": "x:1"}, "b": {"c": "x:2"}, "c": {"a": "x:3"}, "d": {"a": "x:4"}}
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert one_cycle(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b": ""}, "b": {}}) == []
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n"
        "def f(a, b, *c, d, **e):\n    import torch.nn\n    from . import x\n"
        "class K:\n    def g(self, a):\n        import tempfile\n"
    )
    found = [(type(n).__name__, n.lineno, inside) for n, inside in imports(source)]
    assert found == [("Import", 1, False), ("ImportFrom", 2, False), ("Import", 6, True), ("ImportFrom", 7, True), ("Import", 10, True)]
    fns = {fn.name: fn for fn in ast.walk(ast.parse(source.read_text())) if isinstance(fn, ast.FunctionDef)}
    assert parameters(fns["f"]) == ["a", "b", "d", "c", "e"] and parameters(fns["g"]) == ["a"]
    node = ast.parse("from .settings import Settings").body[0]
    assert imported_names("captchakit.errors", node) == ["captchakit.settings"]
    node = ast.parse("from ..errors import UserError").body[0]
    assert imported_names("captchakit.export", node) == ["captchakit.errors"]  # in export/__init__.py, .. is captchakit
    node = ast.parse("from captchakit import settings, nothing_such").body[0]
    assert imported_names("captchakit.files", node) == ["captchakit.settings", "captchakit"]

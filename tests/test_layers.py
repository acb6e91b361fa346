"""The package's folders are layers (DESIGN.md section 3): a module imports only from its own
folder or the folders below it, and no modules import each other in a circle. Imports inside
functions count too: a lazy import is still a dependency."""
import ast
from pathlib import Path

import pytest

VITLIB = Path(__file__).resolve().parent.parent / "vitlib"

# Folder -> the folders its modules may import from (besides their own). ``configs`` is plain
# data (no vitlib imports); the CLIs above it load configs by name.
ALLOWED = {
    "files": set(),
    "torchvision_cpu": set(),  # an environment shim run at interpreter start: stdlib only
    "configs": set(),
    "models": {"files"},
    "optim": set(),
    "data": {"files"},
    "evals": {"data"},
    "train": {"models", "optim", "data", "evals", "files", "configs"},
    "analysis": {"models", "optim", "train", "files"},
    "study": {"files", "configs", "models", "optim", "data", "evals", "train", "analysis"},
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path, modules: set) -> set:
    """The package modules ``path`` imports; ``from a import b`` counts as ``a.b`` where that
    is a module, else as ``a``."""
    package = root.name
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: relative import of {node.module}; use the full "
                                     f"path")
            if node.module.split(".")[0] != package:
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
    return out


def import_graph(root: Path) -> dict:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports_of(path, root, set(files)) - {name} for name, path in files.items()}


def folder_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict, allowed: dict) -> list[str]:
    bad = []
    for module, targets in graph.items():
        source = folder_of(module)
        for target in sorted(targets):
            dest = folder_of(target)
            if dest != source and dest not in allowed.get(source, set()):
                bad.append(f"{module} imports {target} ({source or 'top'} -> {dest or 'top'}; "
                           f"{source or 'top'} may import {sorted(allowed.get(source, ()))})")
    return bad


def import_cycles(graph: dict) -> list[list[str]]:
    """Cycles among modules, each as the modules around it (Tarjan's strongly connected
    components of two or more modules)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in VITLIB.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in VITLIB.glob("*.py") if p.stem != "__init__"}
    assert folders | modules == set(ALLOWED), "a new folder needs its place in ALLOWED"


def test_no_upward_imports():
    assert upward_imports(import_graph(VITLIB), ALLOWED) == []


def test_no_circular_imports():
    assert import_cycles(import_graph(VITLIB)) == []


def test_the_checks_catch_an_upward_and_a_circular_import(tmp_path):
    pkg = tmp_path / "vitlib"
    for folder, text in {"models": "from vitlib.study import findings\n",
                         "study": "", "optim": ""}.items():
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
        (pkg / folder / "thing.py").write_text(text)
    (pkg / "__init__.py").write_text("")
    (pkg / "study" / "findings.py").write_text("")
    (pkg / "optim" / "a.py").write_text("def f():\n    from vitlib.optim.b import g\n")
    (pkg / "optim" / "b.py").write_text("from vitlib.optim import a\n")
    graph = import_graph(pkg)
    assert graph["vitlib.models.thing"] == {"vitlib.study.findings"}
    assert [b.split(" ")[0] for b in upward_imports(graph, ALLOWED)] == ["vitlib.models.thing"]
    assert import_cycles(graph) == [["vitlib.optim.a", "vitlib.optim.b"]]


@pytest.mark.parametrize("module", ["vitlib.models.zoo", "vitlib.models.convert",
                                    "vitlib.analysis.memory", "vitlib.train.finetune",
                                    "vitlib.train.from_checkpoint", "vitlib.study.findings",
                                    "vitlib.study.findings_report",
                                    "vitlib.study.reproduce"])
def test_cli_modules_are_not_imported_by_their_package(module):
    # `python -m pkg.mod` warns (and may run the module twice) when pkg/__init__ imports mod.
    package = module.rsplit(".", 1)[0]
    assert module not in import_graph(VITLIB)[package]

"""No two modules of the service import each other, directly or through others.

The graph is read from the source with `ast` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a module, inside functions too, so a cycle cannot hide behind
an import moved into a function. ``from package import name`` points at the submodule when
``name`` is one, else at the package. Cycles are the graph's strongly connected components
of more than one module (or a module importing itself).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "monitoring", "pipelines", "stack", "gateway")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that the module ``name`` (at ``path``) imports: each module an
    import runs, its packages included (``import a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``)."""
    is_package = path.name == "__init__.py"
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b`: the submodule a.b if there is one, else a name in a.
            targets += [f"{base}.{alias.name}" for alias in node.names]
    found = set()
    for target in targets:
        parts = target.split(".")
        found |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)} & known
    return found - {name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components that are cycles (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(components)


def test_the_finder_sees_cycles_and_imports_inside_functions(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "promote.py"
    source.write_text("from . import evaluate\n\ndef f():\n    from p.card import location\n")
    known = {"p", "p.promote", "p.evaluate", "p.card"}
    assert imported("p.promote", source, known) == {"p", "p.evaluate", "p.card"}


def test_the_graph_resolves_the_project_imports():
    edges = graph()
    # `from model.vectorize import Vectorize` and `from pipelines import evaluate`.
    assert "model.vectorize" in edges["model.sentiment_model"]
    assert "pipelines.evaluate" in edges["pipelines.promote"]
    # An import inside a function counts too (monitoring.reference loads the model so).
    assert "model.sentiment_model" in edges["monitoring.reference"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    found = [c for c in cycles(graph()) if any(m.split(".")[0] == package for m in c)]
    assert not found, f"import cycles: {found}"


def test_model_ships_alone():
    """model/ is shipped inside every logged model (code_paths): it imports nothing else of
    the project."""
    outside = {
        (name, target)
        for name, targets in graph().items()
        if name.split(".")[0] == "model"
        for target in targets
        if target.split(".")[0] != "model"
    }
    assert not outside

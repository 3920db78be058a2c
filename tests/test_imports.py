"""The package's import graph, read from the source with ast, has no cycle."""

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "src" / "grainflow"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file, functions included).

    ``from a.b import c`` depends on ``a.b.c`` when that is a module, else on
    ``a.b``; every package on the way (``a``) is imported too, so it counts.
    """
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + [base] * bool(base))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in names:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
                    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
                    parent = target.rpartition(".")[0]
                    while parent:
                        if (
                            parent in modules
                            and parent != name
                            and not name.startswith(parent + ".")
                        ):
                            targets.add(parent)
                        parent = parent.rpartition(".")[0]
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_a_hand_made_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_relative_and_nested_imports(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from p.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    graph = import_graph(pkg)
    assert graph["p.a"] == {"p.sub.b", "p.sub"}  # its own package p is imported already
    assert "p.a" in graph["p.sub.b"]
    assert find_cycle(graph) is not None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40, sorted(graph)  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("module", ["grainflow.models.unet", "grainflow.models.resnet"])
def test_models_do_no_file_io(module):
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    graph = import_graph()
    assert not {m for m in graph[module] if m.startswith(("grainflow.io", "grainflow.checkpoint"))}
    assert "open(" not in path.read_text() and "torch.load" not in path.read_text()

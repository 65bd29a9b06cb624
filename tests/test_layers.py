"""The dependency rule, read from the source: every import (inside functions too) goes one way.

    core         spec, events, state, planner, journal, runner, executors, outputs, fingerprints, ...
      ^
    application  flywheel.app (api.py is its public face)
      ^
    interfaces   cli, ui, reports, aws commands, notify channels

- no import cycle between modules, counting imports made inside functions (a cycle hidden in a
  function body is still a cycle: the two modules cannot be understood or tested apart);
- nothing outside `flywheel.pipelines` imports it: the core knows no pipeline by name;
- the core imports neither the application layer, nor an interface, nor `aws`. (The Glue executor,
  `executors/glue.py`, is the AWS backend of the executor seam: it is AWS code, not core.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

CORE = (
    "flywheel.spec",
    "flywheel.events",
    "flywheel.state",
    "flywheel.planner",
    "flywheel.journal",
    "flywheel.runner",
    "flywheel.executors.base",
    "flywheel.executors.local",
    "flywheel.executors.forkserver",
    "flywheel.outputs",
    "flywheel.fingerprints",
    "flywheel.params",
    "flywheel.invocation",
    "flywheel.errors",
    "flywheel.lock",
    "flywheel.durations",
    "flywheel.killswitch",
    "flywheel.entry",
)
UPPER = ("flywheel.app", "flywheel.api", "flywheel.cli", "flywheel.ui", "flywheel.reports", "flywheel.aws")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The flywheel modules a file imports, anywhere in it, resolved to modules that exist."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("flywheel") and target != name:
                yield target
                break


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    return {name: set(imports_of(path, name, known)) - {name} for name, path in files.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_init_links(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """A package's `__init__` importing its own submodules is how a package presents itself, not a
    cycle between layers: drop parent -> child edges before looking for cycles."""
    return {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


GRAPH = import_graph()


def test_the_import_graph_is_read_from_every_module() -> None:
    assert "flywheel.planner" in GRAPH and "flywheel.spec" in GRAPH["flywheel.planner"]
    assert len(GRAPH) > 60


def test_there_is_no_import_cycle_even_through_imports_inside_functions() -> None:
    assert cycles(_package_init_links(GRAPH)) == []


def test_only_the_pipelines_themselves_import_a_pipeline() -> None:
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("flywheel.pipelines")
        for target in targets
        if target.startswith("flywheel.pipelines")
    )
    assert offenders == []


def test_the_core_imports_no_application_layer_interface_or_aws_code() -> None:
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if within(name, CORE)
        for target in targets
        if within(target, UPPER)
    )
    assert offenders == []


def test_the_checker_sees_a_cycle_hidden_in_a_function_body(tmp_path: Path) -> None:
    package = tmp_path / "flywheel"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from flywheel import two\n")
    (package / "two.py").write_text("def later():\n    from flywheel.one import x\n")
    assert cycles(_package_init_links(import_graph(tmp_path))) == [["flywheel.one", "flywheel.two"]]


@pytest.mark.parametrize("core", CORE)
def test_each_core_module_named_here_exists(core: str) -> None:
    assert any(name == core or name.startswith(core + ".") for name in GRAPH), core

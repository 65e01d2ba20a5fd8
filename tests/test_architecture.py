"""The layering ARCHITECTURE.md promises, read from the source (nothing is imported).

Every import counts, at module level and inside functions: a function-local import that
closes a cycle is still a cycle, only a later one. Code under ``if __name__ == "__main__":``
does not: it runs only when its file is the program, and then the module that the rest of
the suite imports under that name is a second, separate one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "metrics", "reports")
#: The modules that may parse a command line: the CLI and the `python -m bench` entry.
COMMAND_LINE = {"bench.cli", "bench.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts)


@cache
def _sources() -> dict[str, ast.Module]:
    return {_module_name(path): ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node of a module except those under its ``if __name__ == "__main__":``."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(child for child in ast.iter_child_nodes(node) if not _is_main_guard(child))


def _internal(name: str, modules: set[str]) -> str | None:
    """The suite's module that importing `name` runs last: ``a.b.c`` where it is one, else the
    package ``a.b`` (its ``__init__``), and so on up."""
    while name:
        for candidate in (name, name + ".__init__"):
            if candidate in modules:
                return candidate
        name = name.rpartition(".")[0]
    return None


def _imported(module: str, tree: ast.Module, modules: set[str]) -> Iterator[tuple[str, int]]:
    """(internal module, line) for each import in `module`."""
    package = module if module.endswith("__init__") else module.rpartition(".")[0]
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.removesuffix(".__init__").split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _internal(name, modules)
            if target is not None and target != module:
                yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    sources = _sources()
    modules = set(sources)
    graph: dict[str, dict[str, int]] = {}
    for module, tree in sources.items():
        edges = graph.setdefault(module, {})
        for target, line in _imported(module, tree, modules):
            edges.setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "metrics.weights" in graph["metrics.fid"]  # module level
    assert "bench.methods.__init__" in graph["bench.analysis.tradeoff"]  # `from a package import name`
    assert "metrics.registry" in graph["bench.analysis.leaderboard"]  # inside `_infinite_means`


def test_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {_describe(cycle, graph)}"


@pytest.mark.parametrize("package", ["metrics", "reports"])
def test_lower_layers_import_nothing_from_bench(package):
    offending = {module: sorted(target for target in targets if target.startswith("bench"))
                 for module, targets in import_graph().items() if module.startswith(package + ".")}
    assert {module: targets for module, targets in offending.items() if targets} == {}


#: bench/'s subpackages in data-flow order: a module imports only from its own layer or lower
#: ones. The shared records (errors, options, the version) sit below all of them; the command
#: line and the Python API on top.
BENCH_LAYERS = (
    {"bench.__init__", "bench.allocator", "bench.errors", "bench.options"},
    {"bench.data"},
    {"bench.methods"},
    {"bench.scoring"},
    {"bench.analysis"},
    {"bench.flows"},
    {"bench.api", "bench.cli", "bench.__main__"},
)


def _layer(module: str) -> int:
    """The index in BENCH_LAYERS of a bench module, by its subpackage or its own name."""
    parts = module.split(".")
    for name in (".".join(parts[:2]), module):
        for index, layer in enumerate(BENCH_LAYERS):
            if name in layer:
                return index
    raise AssertionError(f"{module} is in no layer of BENCH_LAYERS: add it to the one its imports allow")


def test_every_bench_module_has_a_layer():
    for module in import_graph():
        if module.startswith("bench."):
            _layer(module)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)}), line {line}"
            for module, targets in graph.items() if module.startswith("bench.")
            for target, line in targets.items() if target.startswith("bench.") and _layer(target) > _layer(module)]


def test_bench_subpackages_import_only_downwards():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_sees_an_upward_import():
    graph = {"bench.data.dataset": {"bench.errors": 1, "bench.flows.evaluate": 7},
             "bench.flows.evaluate": {"bench.data.dataset": 3}}
    assert upward_imports(graph) == ["bench.data.dataset (layer 1) imports bench.flows.evaluate (layer 5), line 7"]
    with pytest.raises(AssertionError, match="no layer"):
        _layer("bench.somewhere_new")


def _command_line_uses(tree: ast.Module) -> Iterator[tuple[int, str]]:
    # The whole module, ``if __name__ == "__main__":`` included: an entry point of its own
    # (`python -m bench.flows.startup`, a child process) leaves its command line to bench.cli too.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
            yield node.lineno, "import argparse"
        elif isinstance(node, ast.ImportFrom) and (node.module == "argparse"
                                                   or node.module == "sys" and any(a.name == "argv" for a in node.names)):
            yield node.lineno, f"from {node.module} import ..."
        elif (isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name)
              and node.value.id == "sys"):
            yield node.lineno, "sys.argv"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "sys.argv" in node.value:
            # Code handed to a child interpreter (`python -c ...`) runs below the CLI too.
            yield node.lineno, "sys.argv in a program text"


def test_only_the_cli_parses_command_lines():
    found = [f"{module}:{line}: {what}" for module, tree in _sources().items() if module not in COMMAND_LINE
             for line, what in _command_line_uses(tree)]
    assert found == []


# ------------------------------------------------------------------------- defaults
def _string_constants(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """String constants except dict keys (a record's field "runs" is no folder)."""
    keys = {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys:
            yield node.lineno, node.value


def _string_sequences(tree: ast.Module) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Tuple and list displays, as their string elements in order."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List)):
            yield node.lineno, tuple(_element(e) for e in node.elts)


def _element(node: ast.expr) -> str | None:
    """A string element as itself, ``*NAME`` as "*NAME", anything else as None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Starred) and isinstance(node.value, ast.Name):
        return f"*{node.value.id}"
    return None


def _where(predicate) -> set[str]:
    return {module for module, tree in _sources().items() if predicate(tree)}


@pytest.mark.parametrize(("literal", "home"), [
    # `--dataset fixtures`, the name of the demo set, and the folder the CLI writes into.
    ("fixtures", "bench.data.demo"),
    ("runs", "bench.cli"),
])
def test_each_default_path_is_spelled_in_one_module(literal, home):
    assert _where(lambda tree: any(value == literal for _, value in _string_constants(tree))) == {home}


def _contains(sequence: tuple[str, ...], part: tuple[str, ...]) -> bool:
    return any(sequence[i:i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def test_the_default_metric_lists_are_spelled_in_one_module():
    from metrics.registry import DEFAULT_METRICS, PAPER_METRICS

    assert DEFAULT_METRICS[:len(PAPER_METRICS)] == PAPER_METRICS
    # Help texts of bench/cli.py still spell the list out: the CLI does not import the registry
    # (and torch) to build its parser.
    spelled = (PAPER_METRICS, ("*PAPER_METRICS",))
    assert _where(lambda tree: any(_contains(sequence, part) for _, sequence in _string_sequences(tree)
                                   for part in spelled)) == {"metrics.registry"}


@pytest.mark.parametrize("name", ["DEFAULT_METRICS", "PAPER_METRICS", "DEMO_FOLDER", "RUNS"])
def test_each_default_is_assigned_in_one_module(name):
    def assigns(tree: ast.Module) -> bool:
        return any(isinstance(target, ast.Name) and target.id == name
                   for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                   for target in (node.targets if isinstance(node, ast.Assign) else [node.target]))

    assert len(_where(assigns)) == 1

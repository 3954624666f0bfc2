"""The shape docs/architecture.md describes, kept: the library never imports the command line, no import cycle
between modules or between packages (every import counts, those inside functions too), no module over 500
lines and no function over 50. Read from the source with ast: nothing is imported."""

import ast
import os

import pytest

TOP = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "udocker")


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for parent, _, files in os.walk(TOP):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(parent, name)
                dotted = os.path.relpath(path[:-3], os.path.dirname(TOP)).replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(open(path, encoding="utf-8").read()) for name, path in MODULES.items()}


def _imports(name, tree):
    """The udocker modules `name` imports (a `from P import x` of a submodule x counts as P.x)."""
    package = name if MODULES[name].endswith("__init__.py") else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is the module's own package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {edge for edge in edges if edge in MODULES and edge != name}


GRAPH = {name: _imports(name, tree) for name, tree in TREES.items()}


def _cycles(graph):
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _unit(name):
    """A subpackage (udocker.engines, ...) is one unit; a top-level module (udocker.config) is its own."""
    parts = name.split(".")
    if len(parts) > 2 or MODULES[name].endswith("__init__.py") and name != "udocker":
        return ".".join(parts[:2])
    return name


def test_the_library_never_imports_the_command_line():
    upward = sorted(name for name, edges in GRAPH.items()
                    if not name.startswith("udocker.cli") and name != "udocker.__main__"
                    and any(edge == "udocker.cli" or edge.startswith("udocker.cli.") for edge in edges))
    assert upward == []


def test_loggers_come_from_udocker_log():
    """udocker/log.py configures the package logger only when log.get() first makes it: a module taking its logger
    straight from logging.getLogger would log into an unconfigured logger (its info lines lost)."""
    direct = sorted(name for name, tree in TREES.items() if name != "udocker.log"
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and node.attr == "getLogger"
                    and isinstance(node.value, ast.Name) and node.value.id == "logging")
    assert direct == []


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_packages():
    units = {}
    for name, edges in GRAPH.items():
        units.setdefault(_unit(name), set()).update(_unit(edge) for edge in edges if _unit(edge) != _unit(name))
    assert _cycles(units) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_short(name):
    lines = len(open(MODULES[name], encoding="utf-8").read().splitlines())
    assert lines <= 500, f"{MODULES[name]}: {lines} lines"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(TREES[name])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50]
    assert long == []

"""The package's layers, read from its source: every import of a genefl module, found with `ast` (nothing is
imported), points down or sideways in the layer order below, and no modules import each other in a cycle.

Imports inside functions count like those at the top of a module (a lazy import still ties the two modules
together). Imports under `if TYPE_CHECKING:` are left out: they never run, and serve only type annotations.
"""
from __future__ import annotations

import ast
from pathlib import Path

import genefl

PACKAGE = Path(genefl.__file__).parent

# Low to high. A module's layer is its longest matching prefix; a module may import from its own layer or
# any lower one, never from a higher one.
LAYERS: list[tuple[str, ...]] = [
    ("genefl.errors", "genefl.paths", "genefl.rng", "genefl.own_code", "genefl.options", "genefl.registry"),
    ("genefl.protocol", "genefl.data", "genefl.config"),
    ("genefl.algorithms",),
    ("genefl.runtime", "genefl.results", "genefl.tensorboard"),
    ("genefl.flower",),
    ("genefl.experiments",),
    ("genefl.api", "genefl.cli"),
]
TOP = len(LAYERS) - 1  # the package itself (`genefl/__init__.py`) re-exports the entry points


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    if module == "genefl":
        return TOP
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} has no layer: add it to LAYERS"
    return rank


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in _imports(ast.Module(body=[child], type_ignores=[])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The genefl modules that the module at `path` imports (at its top or inside a function)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            # `from package import module` imports the module; `from module import name` the module only.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def back_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((module, other) for module, targets in graph.items() for other in targets
                  if layer_of(other) > layer_of(module))


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_point_down_only():
    assert back_arrows(import_graph()) == []


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_the_cycle_finder_finds_cycles_and_the_arrow_finder_finds_arrows():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert back_arrows({"genefl.rng": {"genefl.cli"}, "genefl.cli": {"genefl.rng"}}) == [("genefl.rng", "genefl.cli")]

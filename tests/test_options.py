"""Options declared beside their methods: one declaration gives the checks, the config's tables, the
README's table and Flower's app config; your own method's options work the same; and the modules
that the config and the methods are made of import one another in one direction only."""

from __future__ import annotations

import ast
import sys
import tomllib
from dataclasses import dataclass

import pytest

import genefl
from conftest import REPO
from genefl.config import Config, config_to_dict, load_config, method_options_table, replace
from genefl.errors import ConfigError
from genefl.options import Options, check, option

OWN_METHOD = '''
from dataclasses import dataclass

from genefl.algorithms.fedavg import FedAvg, FedAvgClient
from genefl.options import Options, choices, option, positive


@dataclass(frozen=True)
class MineOptions(Options):
    section = "mine"
    steps: int = option(2, positive(), "how many")
    style: str = option("a", choices(("a", "b")), "which")


class Mine(FedAvg):
    options = MineOptions


PAIR = (Mine, FedAvgClient)
'''


@pytest.fixture
def own_method(tmp_path, monkeypatch):
    (tmp_path / "own_method_mod.py").write_text(OWN_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "own_method_mod:PAIR"
    sys.modules.pop("own_method_mod", None)


def test_the_readme_lists_the_methods_options_as_declared():
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- method options: generated from the declarations -->\n")
    block = text[text.index("\n", start) + 1:text.index("<!-- end of method options -->")]
    assert block == method_options_table(), "regenerate the README's table with genefl.config.method_options_table()"


def test_a_method_table_is_declared_beside_the_method_and_checked_by_it():
    from genefl.algorithms import REGISTRY
    from genefl.algorithms.genefl import GeneflOptions

    assert REGISTRY["genefl"][0].options is GeneflOptions and REGISTRY["fedavgm"][0].options is None
    assert type(Config().genefl) is GeneflOptions
    with pytest.raises(ConfigError, match=r"^genefl.gene_budget: must be in \(0, 1\], got 0.0$"):
        load_config(None, ["genefl.gene_budget=0"])


def test_tables_of_methods_not_chosen_are_kept_and_checked():
    config = load_config(None, ["method=fedavg", "genefl.lambda_e=0", "fedprox.mu=0.5"])
    assert config.genefl.lambda_e == 0 and config.fedprox.mu == 0.5
    assert config_to_dict(config)["genefl"]["lambda_e"] == 0
    with pytest.raises(ConfigError, match="^fedprox.mu: must be in"):
        load_config(None, ["method=fedavg", "fedprox.mu=-1"])
    with pytest.raises(ConfigError, match="unknown config key 'scaffold.lr' .valid keys in .scaffold.: server_lr."):
        load_config(None, ["method=fedavg", "scaffold.lr=1"])
    assert replace(config, **{"genefl.lambda_e": 0.5}).genefl.lambda_e == 0.5
    assert Config(**config_to_dict(config)) == config


def test_the_config_table_is_the_same_table_as_before():
    """config.toml, the checkpoint's identity and Flower's keys: the methods' tables sit where they did."""
    table = config_to_dict(Config())
    assert list(table)[-12:] == ["clustering", "server_opt", "genefl", "fedprox", "scaffold", "fedlp", "flearngene",
                                 "codec", "adversary", "defence", "population", "flower"]
    assert table["genefl"]["lambda_e"] == 1.0 and table["flearngene"] == {"gene_budget": 0.25}


def test_your_own_methods_options_are_taken_and_checked_like_a_built_in_ones(own_method, tmp_path):
    config = load_config(None, [f"method={own_method}", "mine.steps=3", "rounds=1"])
    assert config.mine.steps == 3 and config_to_dict(config)["mine"] == {"steps": 3, "style": "a"}
    assert load_config(None, [f"method={own_method}"]).mine.steps == 2  # its defaults when not given
    for setting, message in [("mine.steps=0", "mine.steps: must be > 0, got 0"),
                             ("mine.style=c", "mine.style: must be one of a, b, got 'c'"),
                             ("mine.steps=x", "mine.steps: expected int, got 'x'"),
                             ("mine.stepz=1", "unknown config key 'mine.stepz' (valid keys in [mine]: steps, style)"),
                             ("other.x=1", "unknown config key 'other'")]:
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"method={own_method}", setting])
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
    genefl.run(Config(method=own_method, rounds=1, num_clients=3, num_newcomers=0, mine={"steps": 4}), out=tmp_path / "r")
    assert tomllib.loads((tmp_path / "r" / "config.toml").read_text())["mine"] == {"steps": 4, "style": "a"}
    # not the chosen method (and not registered): its table is not known
    with pytest.raises(ConfigError, match="unknown config key 'mine'"):
        load_config(None, ["method=fedavg", "mine.steps=3"])
    assert "mine" not in config_to_dict(Config())


def test_a_bad_declaration_is_refused():
    @dataclass(frozen=True)
    class Bad(Options):
        section = "bad"
        k: float = option(1.0, check(lambda v: v < 1, "must be < 1"))

    with pytest.raises(ConfigError, match=r"^bad.k: must be < 1, got 1.0$"):
        Bad()
    with pytest.raises(ConfigError, match="unknown config key 'bad.j'"):
        Bad(j=1)


# ---- the import graph ------------------------------------------------------------------------------
def runtime_imports() -> dict[str, set[str]]:
    """genefl module -> the genefl modules it imports when run (at module level or inside functions;
    not those under `if TYPE_CHECKING:`, which only annotations read)."""
    root = REPO / "src"
    modules = {}
    for path in (root / "genefl").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = found
    return graph


def _runtime_nodes(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def in_cycles(graph: dict[str, set[str]]) -> set[str]:
    """The modules on some import cycle: those that can reach themselves."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        return seen

    return {module for module in graph if module in reach(module)}


def test_the_config_the_methods_the_scenario_and_the_newcomer_protocol_import_no_cycle():
    graph = runtime_imports()
    watched = {"genefl.config", "genefl.options", "genefl.registry", "genefl.data.scenario", "genefl.protocol.newcomer",
               *(m for m in graph if m.startswith("genefl.algorithms"))}
    assert "genefl.algorithms.genefl" in watched and "genefl.registry" in graph["genefl.config"]
    assert not in_cycles(graph) & watched, sorted(in_cycles(graph) & watched)


def test_the_cycle_finder_finds_a_cycle():
    assert in_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {"a", "b", "c"}

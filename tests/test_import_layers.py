"""Imports run one way. The harness is a stack of folders, each a layer that imports only
the layers below it (and itself): the interfaces (api), the data, the metrics, the engine
that trains and runs units, the shared model pieces (nn), the aggregation and formatting
of numbers (report), the tasks, the tools (leaderboards, paper tables, sweeps, perf)
and, on top, the command line. The harness never imports a plug-in (methods/,
baselines/); plug-ins use the layers up to the tasks, never the tools or the CLI. No
module takes a private name from another. Checked on the source (every import, also
inside functions), so a backward import fails here before it becomes a cycle."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ("methods", "baselines")
#: bottom to top; a module imports from its own layer and those before it
LAYERS = ("bench.api", "bench.data", "bench.metrics", "bench.engine", "bench.nn", "bench.report",
          "bench.tasks", "bench.tools", "bench.cli")  # fmt: skip
#: the highest layer a plug-in may import
PLUGIN_TOP = "bench.tasks"


def layer(module: str) -> int | None:
    return next((i for i, p in enumerate(LAYERS) if within(module, (p,))), None)


def modules():
    for package in ("bench", *PLUGINS):
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            yield name, path


def imports(path: Path):
    """(module imported, names taken from it) for every import statement in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


ALL = list(modules())


def test_every_harness_module_is_in_a_layer():
    loose = [n for n, _ in ALL if within(n, ("bench",)) and n != "bench" and layer(n) is None]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_imports_point_down(name, path):
    own = layer(name) if within(name, ("bench",)) else LAYERS.index(PLUGIN_TOP)
    for module, _ in imports(path):
        if within(name, ("bench",)):
            assert not within(module, PLUGINS), f"{name} (harness) imports the plug-in {module}"
        theirs = layer(module)
        if theirs is not None and own is not None:
            assert theirs <= own, f"{name} ({LAYERS[own]}) imports {module}, a layer above it"


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_no_private_name_crosses_a_module(name, path):
    for module, names in imports(path):
        if within(module, ("bench", *PLUGINS)):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{name} imports private {private} from {module}"


def test_the_check_finds_a_backward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from methods.card import CARD\n")
    assert ("methods.card", ["CARD"]) in list(imports(bad))
    assert within("methods.card", PLUGINS) and not within("methodsx", PLUGINS)
    assert (
        layer("bench.tools.leaderboard") > layer("bench.engine.runner") > layer("bench.api.method")
    )
    assert layer("bench.tasks.generation.fidelity") == LAYERS.index(PLUGIN_TOP)

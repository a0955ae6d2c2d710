"""Imports run one way. The harness is a stack of folders, each a layer that imports only
the layers below it (and itself): the interfaces (api), the data, the metrics, the training
kit (train), the shared model pieces (nn), the engine that plans and runs units, the
aggregation and formatting of numbers (report), the tasks, the tools (leaderboards, paper
tables, sweeps, perf) and, on top, the command line. The harness never imports a plug-in
(methods/, baselines/); a plug-in imports only the layers made for it (api, data, metrics,
train, nn), never the orchestration, and never another plug-in (what two share belongs in
bench/nn). No module takes a private name from another. Checked on the source (every import, also
inside functions), so a backward import fails here before it becomes a cycle."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ("methods", "baselines")
#: bottom to top; a module imports from its own layer and those before it
LAYERS = ("bench.api", "bench.data", "bench.metrics", "bench.train", "bench.nn", "bench.engine",
          "bench.report", "bench.tasks", "bench.tools", "bench.cli")  # fmt: skip
#: the layers a plug-in may import
PLUGIN_LAYERS = ("bench.api", "bench.data", "bench.metrics", "bench.train", "bench.nn")


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


def plugin_of(module: str) -> str:
    """The plug-in a module belongs to: `methods.dcube.stage1` -> `methods.dcube`."""
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_imports_point_down(name, path):
    for module, _ in imports(path):
        if within(name, ("bench",)):
            assert not within(module, PLUGINS), f"{name} (harness) imports the plug-in {module}"
            own, theirs = layer(name), layer(module)
            if theirs is not None:
                assert theirs <= own, f"{name} ({LAYERS[own]}) imports {module}, a layer above it"
        elif within(module, PLUGINS):
            assert plugin_of(module) == plugin_of(name), (
                f"{name} imports another plug-in, {module}: move what they share into bench/nn"
            )
        elif within(module, ("bench",)):
            assert within(module, PLUGIN_LAYERS), (
                f"{name} (a plug-in) imports {module}; plug-ins use only {PLUGIN_LAYERS}"
            )


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
    assert layer("bench.nn.priors") > layer("bench.train.training")
    assert (
        plugin_of("methods.dcube.stage1") == plugin_of("methods.dcube") != plugin_of("methods.card")
    )

"""Imports run one way: the harness (bench/) never imports a plug-in (methods/, baselines/);
plug-ins and the harness's lower layers never import its tools and reports; no module takes
a private name from another. Checked on the source (every import, also inside functions),
so a backward import fails here before it becomes a cycle."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ("methods", "baselines")
#: the top of the harness: what runs suites and writes tables; nothing below may import it
TOOLS = ("bench.cli", "bench.runner", "bench.sweep", "bench.perf", "bench.perf_table",
         "bench.leaderboard", "bench.paper", "bench.plots")  # fmt: skip
#: the bottom: the method interface, errors, registry, data and shared model pieces
LOWER = ("bench.errors", "bench.registry", "bench.method", "bench.data", "bench.nn")


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


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_imports_point_down(name, path):
    for module, _ in imports(path):
        if within(name, ("bench",)):
            assert not within(module, PLUGINS), f"{name} (harness) imports the plug-in {module}"
        if within(name, PLUGINS) or within(name, LOWER):
            assert not within(module, TOOLS), f"{name} imports {module}, a layer above it"


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_no_private_name_crosses_a_module(name, path):
    for module, names in imports(path):
        if within(module, ("bench", *PLUGINS)):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{name} imports private {private} from {module}"


def test_the_check_finds_a_backward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from methods.label_diffusion import q_sample\n")
    assert ("methods.label_diffusion", ["q_sample"]) in list(imports(bad))
    assert within("methods.label_diffusion", PLUGINS) and not within("methodsx", PLUGINS)

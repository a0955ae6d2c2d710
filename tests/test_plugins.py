"""Methods and datasets from outside the repository: `bench --plugin FILE_OR_MODULE` and
the `bench.plugins` entry-point group. The plug-in here lives in the test's tmp folder,
runs through `bench run` (in a subprocess, as a user would) and `bench leaderboard`, and
its file and hash are in the record's provenance; a broken plug-in is one error line."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

BENCH = [sys.executable, "-m", "bench.cli"]

PLUGIN = textwrap.dedent(
    '''
    """Nearest class mean on the pixels, and a dataset of bright or dark squares."""
    from dataclasses import dataclass

    import numpy as np

    from bench.api.dataset import DatasetBundle, DatasetSpec, SplitData, register_dataset
    from bench.api.method import ClassificationMethod, register_method


    @dataclass
    class NearestMeanConfig:
        temperature: float = 100.0


    @register_method("nearest_mean", "Nearest class mean on the pixels (a plug-in)")
    class NearestMean(ClassificationMethod):
        Config = NearestMeanConfig

        def fit(self, train, val, ctx):
            x = train.images.reshape(len(train), -1) / 255.0
            self.means = np.stack([x[train.labels == c].mean(0) for c in range(self.spec.num_classes)])
            return {"selection_metric": None}

        def predict(self, split, ctx):
            x = split.images.reshape(len(split), -1) / 255.0
            d = ((x[:, None] - self.means[None]) ** 2).mean(2)
            z = -d * self.config.temperature
            p = np.exp(z - z.max(1, keepdims=True))
            return p / p.sum(1, keepdims=True)


    @register_dataset("squares", "binary", "bright or dark squares (a plug-in)")
    def squares(data_dir=None, download=None):
        rng = np.random.default_rng(0)

        def split(n):
            labels = rng.integers(0, 2, n)
            images = rng.integers(0, 120, (n, 16, 16, 1)).astype(np.uint8)
            images[labels == 1, 4:12, 4:12] += 100
            return SplitData(images, labels, [f"i{k}" for k in range(n)])

        spec = DatasetSpec("squares", "binary", ("dark", "bright"), 1, 16)
        return DatasetBundle(spec, {"train": split(64), "val": split(32), "test": split(48)})
    '''
)


def write_plugin(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_plugin.py").write_text(PLUGIN)
    suite = folder / "plug.yaml"
    suite.write_text(
        "task: classification\ndatasets: [squares]\nmethods: [nearest_mean]\nseeds: [0, 1]\n"
        "presets: {smoke: {budget: {epochs: 1}}}\n"
    )
    return folder / "my_plugin.py", suite


def bench(*args, cwd, env=None):
    return subprocess.run(
        [*BENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_plugin_file_outside_the_repository_runs_through_run_and_leaderboard(tmp_path):
    """Named by a relative path and run with --jobs 2: the two processes `bench run`
    starts load it too ($BENCH_PLUGINS, made absolute), each writing one seed."""
    plugin, suite = write_plugin(tmp_path / "outside")
    results, boards = tmp_path / "results", tmp_path / "boards"
    ran = bench(
        "--plugin", "outside/my_plugin.py", "run", "--suite", str(suite), "--results-dir",
        str(results), "--work-dir", str(tmp_path / "work"), "--no-progress", "--jobs", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr + ran.stdout
    records = sorted(results.rglob("seed*.json"))
    assert [r.name for r in records] == ["seed0.json", "seed1.json"]
    record = json.loads(records[0].read_text())
    assert record["status"] == "ok" and record["method"] == "nearest_mean"
    assert record["metrics"]["test"]["auroc"] > 0.95  # the squares are easy: it learned them
    (loaded,) = record["provenance"]["plugins"]
    assert loaded["file"] == str(plugin)
    assert loaded["sha256"] == hashlib.sha256(plugin.read_bytes()).hexdigest()

    board = bench(
        "--plugin", str(plugin), "leaderboard", "--suite", str(suite), "--results-dir",
        str(results), "--out-dir", str(boards), cwd=tmp_path,
    )  # fmt: skip
    assert board.returncode == 0, board.stderr
    table = (boards / "plug.md").read_text()
    assert "nearest_mean" in table and "squares" in table

    # without the plug-in its names are unknown: one line naming the method
    bare = bench("run", "--suite", str(suite), "--results-dir", str(tmp_path / "r2"), cwd=tmp_path)
    assert bare.returncode == 2
    assert "unknown" in bare.stderr and (
        "'squares'" in bare.stderr or "'nearest_mean'" in bare.stderr
    )


def test_a_broken_or_missing_plugin_stops_with_one_line_naming_it(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy\nraise RuntimeError('half-written plug-in')\n")
    out = bench("--plugin", str(broken), "list", "methods", cwd=tmp_path)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert str(broken) in line and "RuntimeError: half-written plug-in" in line

    out = bench("--plugin", "no_such_plugin_module", "list", "methods", cwd=tmp_path)
    (line,) = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "'no_such_plugin_module'" in line and "not found" in line


def test_an_installed_package_registers_through_the_entry_point_group(tmp_path):
    """A package's `[project.entry-points."bench.plugins"]`, as pip leaves it on disk (a
    dist-info folder beside the module), is loaded without --plugin."""
    site = tmp_path / "site"
    plugin, _ = write_plugin(site)
    plugin.rename(site / "lab_methods.py")
    info = site / "lab_methods-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-methods\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.plugins]\nnearest = lab_methods\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    out = bench("list", "methods", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "nearest_mean" in out.stdout and "Nearest class mean" in out.stdout

"""Bad input in a suite file or on the command line ends in one line naming the key or
value at fault (exit code 2, no traceback), before anything is trained."""

import pytest
from conftest import TINY_SUITE

from bench.cli import main

TINY = open(TINY_SUITE).read()


def _run_suite_text(tmp_path, capsys, text, *extra):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(
        ["run", "--suite", str(path), "--results-dir", str(tmp_path / "r"), "--no-progress", *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("bench: error: "), err
    assert not list(tmp_path.rglob("*.json"))
    return err[0]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("  - name: resnet18\n    options:", "  - options:", "methods entry 1 ({'options'"),
        (
            "  - name: resnet18\n",
            "  - name: resnet18\n    optoins: {}\n",
            "unknown keys ['optoins']",
        ),
        ("seeds: [0, 1]", "seeds: [zero]", "seeds: 'zero' is not an integer seed"),
        (
            "presets:\n  smoke:\n    budget:",
            "presets:\n  - smoke:\n      budget:",
            "'presets' must be a mapping",
        ),
        (
            "datasets: [breastmnist]",
            "datasets: breastmnist: x",
            "not valid YAML at line 3, column 22",
        ),
    ],
)
def test_a_bad_suite_file_is_one_line_naming_the_key(tmp_path, capsys, old, new, expected):
    assert old in TINY
    assert expected in _run_suite_text(tmp_path, capsys, TINY.replace(old, new))


def test_a_bad_seed_on_the_command_line_is_one_line(tmp_path, capsys):
    assert "bench run --seeds: 'a' is not an integer seed" in _run_suite_text(
        tmp_path, capsys, TINY, "--seeds", "0,a"
    )

"""The typed record (bench/api/record.py, bench/api/perf_record.py): every committed record
file reads and writes back to the same JSON, the fallbacks for older files live there, and
no other module reads a record field by its string key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.api.perf_record import PerfRecord
from bench.api.record import Record, RunError
from bench.engine.records import read_record

REPO = Path(__file__).resolve().parents[1]
RUN_RECORDS = sorted(
    p
    for suite in ("classification", "generation", "restoration", "sweeps")
    for p in (REPO / "results" / suite).rglob("seed*.json")
)
PERF_RECORDS = sorted((REPO / "results" / "perf").rglob("*.json"))


def test_there_are_committed_records_to_check():
    assert len(RUN_RECORDS) > 150 and len(PERF_RECORDS) > 10


@pytest.mark.parametrize("path", RUN_RECORDS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_run_record_round_trips(path):
    data = json.loads(path.read_text())
    record = Record.load(path)
    assert record.to_dict() == data
    assert json.loads(record.to_json()) == data
    assert record.path == path and record.precision in ("fp32", "bf16")


@pytest.mark.parametrize("path", PERF_RECORDS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_perf_record_round_trips(path):
    data = json.loads(path.read_text())
    assert PerfRecord.load(path).to_dict() == data


def _minimal(**extra) -> dict:
    return {
        "schema_version": "1.0",
        "suite": "s",
        "preset": "p",
        "dataset": "d",
        "method": "m",
        "seed": 0,
        "config_hash": "h",
        "status": "ok",
        **extra,
    }


def test_what_an_older_file_lacks_reads_as_its_default_and_is_not_written_back():
    old = _minimal(provenance={"git_commit": "c"}, metrics={"test": {"auroc": 0.7}})
    record = Record.from_dict(old)
    assert record.provenance.precision == "fp32" and record.provenance.execution is None
    assert record.provenance.cpu == "CPU not recorded"
    assert record.ok and record.metric("test", "auroc") == 0.7 and record.metric("val", "x") is None
    assert record.data is None and record.priors == {} and record.predicted_share("test") is None
    assert record.to_dict() == old
    record.provenance.precision = "bf16"  # a field set on purpose is written
    assert record.to_dict()["provenance"] == {"git_commit": "c", "precision": "bf16"}


def test_unknown_keys_are_kept_and_the_task_payload_is_the_rest():
    d = _minimal(per_class={"test": {"recall": [1.0]}}, new_block={"x": 1})
    d["selection"] = {"best_epoch": 3, "dcg": {"cache": "hit"}}
    record = Record.from_dict(d)
    assert record.payload == {"per_class": {"test": {"recall": [1.0]}}, "new_block": {"x": 1}}
    assert record.per_class("test") == {"recall": [1.0]}
    assert record.selection.best_epoch == 3 and record.selection.other == {"dcg": {"cache": "hit"}}
    assert record.to_dict() == d


def test_a_failed_record_says_why_and_save_is_atomic(tmp_path):
    record = Record.from_dict(_minimal(status="failed"))
    record.error = RunError(type="TrainingError", message="loss became nan", traceback="")
    record.metrics = {"test": {"auroc": float("nan")}}
    path = record.save(tmp_path / "seed0.json")
    assert [p.name for p in tmp_path.iterdir()] == ["seed0.json"]
    again = Record.load(path)
    assert not again.ok and str(again.error) == "TrainingError: loss became nan"
    assert again.metrics == {"test": {"auroc": None}}  # NaN is written as null


def test_an_unusable_file_is_named_with_the_reason(tmp_path):
    cases = {
        "other version": json.dumps(_minimal(schema_version="2.0")),
        "not a record": json.dumps({"schema_version": "1.0", "suite": "s"}),
        "truncated": json.dumps(_minimal())[:40],
        "a list": "[1]",
    }
    for name, text in cases.items():
        (tmp_path / f"{name}.json").write_text(text)
    why = {name: read_record(tmp_path / f"{name}.json")[1] for name in cases}
    assert why["other version"] == "schema version 2.0, not 1.0"
    assert why["not a record"].startswith("not a record: no preset")
    assert why["truncated"].startswith("not valid JSON")
    assert why["a list"] == "not a record: a JSON list, not an object"


#: How a record field used to be read by its string key: ``x["metrics"]`` or
#: ``x.get("metrics"`` for every section and payload block of a run or perf record. The
#: identity keys (method, dataset, seed, preset, config_hash, precision) are left out:
#: they are also the columns of every report frame, so a pattern on them finds frames.
RECORD_KEYS = (
    "metrics", "provenance", "selection", "timings", "memory", "data", "error",
    "schema_version", "schema", "predictions", "replaces", "class_names", "_path", "per_class",
    "predicted_share", "priors", "evaluation", "extractor_info", "rescored", "execution",
    "git_commit", "git_dirty", "matmul_peak_gflops", "results", "input",
)  # fmt: skip
ACCESS = re.compile(r'(\[|\.get\()"(' + "|".join(RECORD_KEYS) + r')"')
STATUS = re.compile(r'\.get\("status"')  # a record's status; ``["status"]`` also names summary rows
#: Files where one of those names belongs to another dict, and which: a paper table's
#: spec (bench/papers/*.yaml), a suite file's preset, a task's scoring fields before they
#: become a record, git's state.
NOT_RECORDS = {
    "bench/tools/paper.py": {"metrics"},  # a paper table's spec
    "bench/tools/paper_sweep.py": {"metrics"},  # a paper table's spec
    "bench/tools/paper_grid.py": {"metrics"},  # a paper table's spec
    "bench/engine/config.py": {"evaluation"},  # a suite file's preset
    "bench/tasks/classification/calibration.py": {"metrics", "priors"},  # scoring fields
    "bench/tasks/generation/__init__.py": {"evaluation"},  # scoring fields
    "bench/tasks/classification/rescore.py": {"git_commit", "git_dirty"},  # git_state()
    "bench/tasks/generation/rescore.py": {"git_commit"},  # git_state()
    "bench/engine/records.py": {"git_dirty"},  # git_state()
}
TYPED = {"bench/api/record.py", "bench/api/perf_record.py"}


def test_no_module_reads_a_record_field_by_its_string_key():
    found = []
    for path in sorted(
        p for d in ("bench", "methods", "baselines") for p in (REPO / d).rglob("*.py")
    ):
        rel = path.relative_to(REPO).as_posix()
        if rel in TYPED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            keys = {m.group(2) for m in ACCESS.finditer(line)} - NOT_RECORDS.get(rel, set())
            if keys or STATUS.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "read through bench.api.record.Record instead:\n" + "\n".join(found)

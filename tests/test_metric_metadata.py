"""What a table needs to know of a metric (direction, decimals, ranking, headline, order)
is the metric's own registration (bench/metrics/metric.py), and the generic layers (api,
engine, report, tools, cli) name no metric: a new metric shows correctly everywhere by
being registered."""

import ast
from pathlib import Path

import pytest

from bench.api.registry import METRICS
from bench.metrics.metric import headline_metrics, ranked_metrics, register_metric, table_order
from bench.report.cells import fmt_value

REPO = Path(__file__).resolve().parents[1]
GENERIC = ["bench/api", "bench/engine", "bench/report", "bench/tools", "bench/cli.py"]


def generic_modules():
    for where in GENERIC:
        path = REPO / where
        yield from [path] if path.is_file() else sorted(path.rglob("*.py"))


#: a metric's name that is also a word of the harness: fp32/bf16 "precision"
AMBIGUOUS = {"precision"}


@pytest.mark.parametrize("path", list(generic_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_generic_module_names_a_metric(path):
    names = set(METRICS.names()) - AMBIGUOUS
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert not found, (
        "metric names in a generic layer (ask the metric registry instead): " + ", ".join(found)
    )


def test_tables_order_rank_and_format_by_the_registration():
    assert ranked_metrics(["ssim", "kid_std", "fid", "auroc", "accuracy", "ece_scaled"]) == [
        "accuracy", "auroc", "ece_scaled", "fid", "ssim",
    ]  # fmt: skip
    assert table_order(["psnr", "rmse", "nmae", "ssim"]) == ["rmse", "nmae", "psnr", "ssim"]
    assert headline_metrics(["ece", "auroc", "accuracy", "kid_mean", "fid"]) == [
        "accuracy",
        "auroc",
        "fid",
    ]
    assert [fmt_value(1 / 3, m) for m in ("auroc", "fid", "psnr", "rmse")] == [
        "0.333", "0.33", "0.33", "0.3333",
    ]  # fmt: skip
    assert fmt_value(0.8123, "auroc", scale=100) == "81.23"
    with pytest.raises(TypeError, match="fid is computed from images"):
        METRICS.get("fid")([0, 1], [[0.5, 0.5], [0.5, 0.5]], "binary")


def test_a_new_metric_is_shown_by_its_registration_alone(monkeypatch):
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))
    register_metric("dice", "overlap", tasks=("segmentation",), decimals=1, headline=True)
    assert fmt_value(0.25, "dice") == "0.2" and "dice" in headline_metrics(["dice", "auroc"])

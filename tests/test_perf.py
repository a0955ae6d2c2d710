import json

import pytest
import torch
from conftest import REPO

from bench.api.errors import BenchError
from bench.api.method import Budget, RunContext, TrainingProbe, config_hash
from bench.api.perf_record import RandomInput
from bench.api.registry import METHODS
from bench.engine.config import MethodEntry, load_suite
from bench.engine.records import load_records
from bench.tasks.restoration.scoring import FLOOR_METHODS
from bench.tools.perf import run_perf
from bench.tools.perf_table import render_perf
from bench.train.batches import Schedule
from bench.train.device import cpu_has_native_bf16, make_accelerator, resolve_precision
from bench.train.training import Optimisation, Validation, train_loop

TINY_V2 = {
    "image_size": 28,
    "roi_size": 7,
    "dcg_small_stem": True,
    "roi_encoder_small_stem": True,
    "latent_dim": 32,
    "global_encoder": "vit_tiny_patch16_224",
    "global_encoder_kwargs": {"patch_size": 4, "depth": 1},
}
#: the shape of each suite's smoke data (BreastMNIST; RetinaMNIST; 16 px restoration patches)
SMOKE_SHAPES = {
    "classification": RandomInput(image_size=28, channels=1, classes=2, name="breastmnist"),
    "generation": RandomInput(image_size=28, channels=3, classes=5, name="retinamnist"),
    "restoration": RandomInput(image_size=16, channels=1, classes=1, name="patches"),
}
#: bf16 where this CPU has it natively; elsewhere it is emulated, minutes a case, so fp32
NATIVE = "bf16" if cpu_has_native_bf16() else "fp32"
NOTHING_TO_TRAIN = set(
    FLOOR_METHODS
)  # the restoration floors: training-free (identity, clip_input, nlm)


def test_precision_auto_is_bf16_exactly_where_the_cpu_has_native_bf16():
    assert resolve_precision("auto", use_cpu=True) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert (
        resolve_precision("auto", use_cpu=False) == "bf16"
        and resolve_precision("fp32", use_cpu=True) == "fp32"
    )
    with pytest.raises(BenchError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", use_cpu=True)
    # one process can switch precision (accelerate keeps one state per process)
    assert make_accelerator("bf16", cpu=True)[0].mixed_precision == "bf16"
    assert make_accelerator("fp32", cpu=True)[0].mixed_precision == "no"


def test_the_precision_is_part_of_a_units_identity_and_old_records_keep_theirs():
    budget = Budget(epochs=100, batch_size=128, eval_batch_size=256)
    assert (
        config_hash("m", {"a": 1}, budget)
        == config_hash("m", {"a": 1}, budget, "fp32")
        != config_hash("m", {"a": 1}, budget, "bf16")
    )
    committed = [
        r for r in load_records(REPO / "results", "classification") if r.precision == "fp32"
    ]
    assert committed, "no committed fp32 classification records"
    for r in committed:  # every committed fp32 record is still found under its own hash
        assert config_hash(r.method, r.config, Budget(**r.budget), "fp32") == r.config_hash


def test_the_probe_counts_flops_times_steps_and_stops_without_validation(tmp_path):
    """A linear layer of 4 -> 3 on batches of 8: forward 2*4*3 FLOPs per image, backward
    twice that (input and weight gradients): 72 per image; the conv goes channels-last."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(32, 1, 2, 2), torch.arange(32) % 3
    probe = TrainingProbe(steps=2)
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        Budget(),
        tmp_path / "ck",
        progress=False,
        probe=probe,
    )
    calls = []

    def step(idx):
        calls.append(len(idx))
        return torch.nn.functional.cross_entropy(model(x[idx]), y[idx])

    def evaluate():
        raise AssertionError("the probe must not validate")

    summary = train_loop(
        model,
        step,
        ctx,
        Schedule(32, 8, 1000, 10),
        Optimisation(torch.optim.SGD(model.parameters(), lr=0.1)),
        Validation(evaluate),
        desc="lin",
    )
    assert (
        calls == [8] * probe.total_steps == [8] * 4
        and summary["probe"]
        and not (tmp_path / "ck").exists()
    )
    (stage,) = probe.stages
    conv_flops = (
        2 * 2 * 4
    )  # 1x1 conv, one channel, 4 pixels: forward and weight gradient (the input needs none)
    assert (
        stage["stage"] == "lin"
        and stage["flops_per_image"] == 72 + conv_flops
        and stage["images_per_s"] > 0
    )
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def _tiny_case(name: str) -> tuple[dict, RandomInput | None]:
    """The smoke preset's options of the method's task suite where it has some, else the
    method's defaults at bench perf's default shape (224 px: timm models sized for ImageNet)."""
    spec = METHODS.get(name)
    suite = load_suite(spec.cls.task)
    preset = suite.preset("smoke")
    entry = next((m for m in suite.methods if m.name == name), MethodEntry(name))
    options = suite.options_for(entry, preset, spec.preset_options_of)
    return options, SMOKE_SHAPES[spec.cls.task] if options else None


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS.names() + ["syn:resnet18", "timm:resnet18"])
def test_every_registered_method_can_be_measured(name, tmp_path):
    options, shape = _tiny_case(name)
    record, path = run_perf(
        name,
        options=options,
        shape=shape,
        batch_size=2,
        train_batch_size=4,
        train_steps=1,
        repeats=1,
        precision=NATIVE,
        cpu=True,
        results_dir=tmp_path,
        preset="smoke",
        log=lambda m: None,
    )
    res = record.results
    assert (
        json.loads(path.read_text())["results"]["inference_images_per_s"]
        == res["inference_images_per_s"]
        > 0
    )
    assert abs(res["batch1_ms_per_image"] - 1000 / res["batch1_images_per_s"]) < 1e-6
    peaks = record.matmul_peak_gflops
    assert record.precision == NATIVE and 0 < peaks["fp32"]
    # bf16's peak only where bf16 is native: an emulated one costs tens of seconds
    assert (peaks["bf16"] is not None and peaks["bf16"] > 0) == (NATIVE == "bf16")
    if name in NOTHING_TO_TRAIN:
        assert res["training_stages"] == [] and res["inference_flops_per_image"] == 0
        return
    # every training stage went through the shared loop, and each did real work
    assert res["training_stages"] and all(
        s["flops_per_image"] > 0 and s["images_per_s"] > 0 for s in res["training_stages"]
    )
    assert res["inference_flops_per_image"] > 0 and 0 < res["inference_fraction_of_peak"] < 2
    assert res["train_achieved_gflops"] == pytest.approx(
        res["train_flops_per_image"] * res["train_images_per_s"] / 1e9
    )


def test_perf_records_the_authors_pattern_side_by_side_and_the_table_shows_both(tmp_path):
    runs = {}
    for authors in (False, True):
        record, path = run_perf(
            "diffmic_v2",
            options=TINY_V2,
            shape=SMOKE_SHAPES["classification"],
            batch_size=4,
            train_batch_size=4,
            train_steps=1,
            repeats=1,
            authors_pattern=authors,
            precision=NATIVE,
            cpu=True,
            results_dir=tmp_path,
            preset="tiny",
            log=lambda m: None,
        )
        assert json.loads(path.read_text()) == json.loads(json.dumps(record.to_dict(), default=str))
        runs[authors] = record
    assert (
        runs[False].config["recompute_conditions"] is False
        and runs[True].config["recompute_conditions"] is True
    )
    assert runs[True].precision == "fp32" and runs[True].pattern == "authors"
    assert [s["stage"] for s in runs[False].stages] == ["DCG", "DiffMIC-v2"]
    with pytest.raises(BenchError, match="declares no AUTHORS_PATTERN"):
        run_perf("resnet18", authors_pattern=True, cpu=True, results_dir=tmp_path)
    assert len({p.name for p in tmp_path.rglob("*.json")}) == 2  # one record per pattern
    text = render_perf(tmp_path)
    ratio = runs[False].rate("inference") / runs[True].rate("inference")
    row = next(
        line
        for line in text.splitlines()
        if line.startswith(f"| diffmic_v2 | {NATIVE} | ") and "x |" in line
    )
    assert f"| {ratio:.1f}x |" in row
    main = next(
        line
        for line in text.splitlines()
        if line.startswith(f"| diffmic_v2 | {NATIVE} | ") and "DCG" in line
    )
    assert "DCG " in main.split("|")[-2]  # the prior's stage is listed beside the method's own
    assert "preset `tiny`, breastmnist shape (28 px, 1 channel(s), 2 classes)" in text

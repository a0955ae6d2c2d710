"""Mid-unit resume: a training stage killed after a checkpoint continues where it stopped
and ends exactly where an uninterrupted run ends (weights, history, random streams); a
checkpoint written by other code is ignored; the runner removes checkpoints once the
unit's record is written."""

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed
from conftest import TINY_SUITE, real_data_dir

from bench.api.dataset import SplitData
from bench.api.method import Budget, RunContext
from bench.api.registry import METHODS
from bench.data.load import load_bundle
from bench.engine.runner import run_suite
from bench.train.batches import Schedule
from bench.train.device import make_accelerator
from bench.train.resume import SUFFIX, checkpoint_path
from bench.train.training import Optimisation, Validation, train_loop

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands for the process being killed after a validation epoch."""


def subset(split: SplitData, n: int) -> SplitData:
    return SplitData(split.images[:n], split.labels[:n], split.ids[:n])


def fit_and_predict(name, bundle, ckdir, options, budget, kill_at=None, logs=None):
    """fit() as run_unit calls it (seeded first), checkpointing after every validation."""

    def on_eval(epoch, value):
        if epoch == kill_at:
            raise Killed

    set_seed(0, deterministic=True)
    entry = METHODS.get(name)
    method = entry.cls(entry.make_config(options), bundle.spec)
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        budget,
        ckdir,
        (logs if logs is not None else []).append,
        False,
        on_eval=on_eval,
        checkpoint_every_s=0,
    )
    splits = bundle.splits
    summary = method.fit(subset(splits["train"], 128), subset(splits["val"], 64), ctx)
    out = (
        method.predict(subset(splits["test"], 64), ctx)
        if name != "dm"
        else method.sample(np.array([0, 1, 2, 3, 4]), ctx)
    )
    return summary, out


@pytest.mark.parametrize(
    "name,dataset,options",
    [
        (
            "resnet18",
            "breastmnist",
            {"input_size": 32, "hflip": True},
        ),  # MultiStepLR + the flips' generator
        (
            "dm",
            "retinamnist",
            {
                "image_size": 16,
                "block_out_channels": [16, 32],
                "layers_per_block": 1,  # noise generator
                "norm_num_groups": 8,
                "attention_resolution": 8,
                "sampling_steps": 3,
                "ema_decay": 0.9,  # the weight average is checkpointed with the weights
            },
        ),
    ],
)
def test_a_killed_training_resumes_and_ends_where_an_uninterrupted_one_ends(
    tmp_path, name, dataset, options
):
    bundle = load_bundle(dataset, data_dir=real_data_dir())
    budget = Budget(epochs=3, batch_size=32, eval_batch_size=64)
    whole, whole_out = fit_and_predict(name, bundle, tmp_path / "whole", options, budget)
    assert whole["resumed_after_epoch"] is None

    with pytest.raises(Killed):
        fit_and_predict(name, bundle, tmp_path / "killed", options, budget, kill_at=2)
    saved = list((tmp_path / "killed").rglob(f"*{SUFFIX}"))  # a generator's: under its cache key
    assert len(saved) == 1 and torch.load(saved[0], weights_only=False)["epoch"] == 1

    logs = []
    resumed, resumed_out = fit_and_predict(
        name, bundle, tmp_path / "killed", options, budget, logs=logs
    )
    assert resumed["resumed_after_epoch"] == 1
    assert any("resuming after epoch 1 of 3" in line for line in logs)
    assert (
        resumed["history"] == whole["history"]
    )  # same losses and validation scores, epoch by epoch
    assert resumed["steps"] == whole["steps"] and resumed["best_epoch"] == whole["best_epoch"]
    np.testing.assert_array_equal(resumed_out, whole_out)


def test_a_checkpoint_of_another_model_or_plan_is_ignored_with_a_message(tmp_path):
    acc = make_accelerator("fp32", cpu=True)[0]
    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 2

    def run(out_features, logs, epochs=2):
        model = torch.nn.Linear(4, out_features)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx = RunContext(
            acc,
            0,
            Budget(epochs=epochs, batch_size=16),
            tmp_path,
            logs.append,
            False,
            checkpoint_every_s=0,
        )
        step = lambda idx: torch.nn.functional.cross_entropy(model(x[idx]), y[idx])  # noqa: E731
        return train_loop(
            model,
            step,
            ctx,
            Schedule(64, 16, 4 * epochs, epochs),
            Optimisation(opt),
            Validation(lambda: -step(np.arange(64)).item()),
            desc="probe",
        )

    run(2, [])
    assert checkpoint_path(tmp_path, "probe").exists()
    logs = []
    summary = run(3, logs)  # other code: the head's shape differs
    assert (
        summary["resumed_after_epoch"] is None
        and summary["epochs_run"] == 2
        and summary["steps"] == 8
    )
    assert any("does not match this model" in line for line in logs)

    logs = []
    summary = run(3, logs, epochs=3)  # the same model, a longer budget: its schedule would be wrong
    assert (
        summary["resumed_after_epoch"] is None
        and summary["epochs_run"] == 3
        and summary["steps"] == 12
    )
    assert any("another training plan" in line for line in logs)


def test_the_runner_removes_checkpoints_once_a_record_is_written(tmp_path, data_dir, monkeypatch):
    import bench.engine.runner

    work, there_before = tmp_path / "runs", []
    remove = bench.engine.runner.remove_checkpoints
    monkeypatch.setattr(
        bench.engine.runner,
        "remove_checkpoints",
        lambda d, **kw: (there_before.extend(d.glob(f"*{SUFFIX}")), remove(d, **kw)),
    )
    outcomes = run_suite(
        TINY_SUITE,
        "smoke",
        methods=["resnet18"],
        seeds=[0],
        results_dir=tmp_path / "results",
        work_dir=work,
        progress=False,
        checkpoint_every_s=0,
    )
    assert [o.status for o in outcomes] == ["ok"]
    assert len(there_before) == 1 and list((tmp_path / "results").rglob("seed0.json"))
    assert not list(work.rglob(f"*{SUFFIX}"))
    assert not [d for d in work.rglob("*") if d.is_dir()]  # nor its emptied folders


def test_patience_stops_a_stage_on_validation_and_a_rerun_does_not_train_on(tmp_path):
    """Budget.patience: a stage stops after that many validations without a better score;
    its checkpoint says so, and the rerun (e.g. after a failed record write) trains no more."""
    acc = make_accelerator("fp32", cpu=True)[0]
    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 2
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9, 0.95])  # best at epoch 2, then 3 worse ones

    def run(logs):
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx = RunContext(
            acc, 0, Budget(epochs=7, batch_size=16, patience=3), tmp_path, logs.append, False
        )
        step = lambda idx: torch.nn.functional.cross_entropy(model(x[idx]), y[idx])  # noqa: E731
        return train_loop(
            model,
            step,
            ctx,
            Schedule(64, 16, 28, 7),
            Optimisation(opt),
            Validation(lambda: next(scores)),
            desc="patient",
        )

    logs = []
    summary = run(logs)
    assert (
        summary["stopped_early"]
        and summary["best_epoch"] == 2
        and summary["epochs_run"] == 5
        and summary["steps"] == 20
    )
    assert any("stopping after epoch 5" in line for line in logs)
    again = run([])
    assert (
        again["resumed_after_epoch"] == 5
        and again["steps"] == 20
        and again["epochs_run"] == 5
        and again["stopped_early"]
    )


def test_a_budget_without_patience_keeps_the_hash_of_records_made_before_it_existed():
    from bench.api.method import config_hash

    assert config_hash("m", {"a": 1}, Budget(epochs=3)) == config_hash(
        "m", {"a": 1}, Budget(epochs=3, patience=None)
    )
    assert config_hash("m", {"a": 1}, Budget(epochs=3)) != config_hash(
        "m", {"a": 1}, Budget(epochs=3, patience=5)
    )


def train_toy_part(ctx, data_seed, kind, payload, own_training=False):
    """A linear classifier on 64 random points (from `data_seed`), trained for
    ctx.budget.epochs epochs of 4 batches through `cached_pretraining`: (model, summary)."""
    from bench.nn.pretraining import cached_pretraining

    g = torch.Generator().manual_seed(data_seed)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = lambda idx: torch.nn.functional.cross_entropy(model(x[idx]), y[idx])  # noqa: E731
    epochs = ctx.budget.epochs

    def train():
        return train_loop(
            model, step, ctx, Schedule(64, 16, 4 * epochs, epochs), Optimisation(opt),
            Validation(lambda: -step(np.arange(64)).item()),
        )  # fmt: skip

    return model, cached_pretraining(kind, payload, model, train, ctx, own_training=own_training)


def test_pretrained_parts_in_a_shared_cache_never_resume_from_each_other(tmp_path):
    """Two cached parts trained with the same plan in one cache directory (the FID
    extractors of two datasets of the same size, the same seed) are trained each from its
    own start; once stored, nothing is left to resume."""
    acc = make_accelerator("fp32", cpu=True)[0]
    ctx = RunContext(
        acc, 0, Budget(epochs=2, batch_size=16), tmp_path / "unit", print, False,
        cache_dir=tmp_path / "cache", checkpoint_every_s=0,
    )  # fmt: skip

    def part(data_seed):
        return train_toy_part(ctx, data_seed, "extractor", {"data": data_seed})

    first, first_summary = part(1)
    second, second_summary = part(2)  # the same plan (steps, epochs, batch, n, seed)
    assert first_summary["cache"] == second_summary["cache"] == "miss"
    assert second_summary["resumed_after_epoch"] is None and second_summary["steps"] == 8
    assert not torch.equal(first.weight, second.weight)
    assert ctx.checkpoint_dir == tmp_path / "unit"
    assert not list((tmp_path / "cache").rglob(f"*{SUFFIX}"))


def test_a_shared_training_killed_in_one_unit_resumes_in_another_that_shares_it(tmp_path):
    """A generator's own training, cached for the units that differ only in how they
    sample (a guidance grid), keeps its checkpoints under the cache key: killed in one unit,
    it resumes in whichever unit needs it next (a grid's next run may start at another
    point), still reporting to that unit's pruner; once stored, nothing is left to resume."""
    acc = make_accelerator("fp32", cpu=True)[0]
    reported = []

    def unit(name, kill_at=None):
        def on_eval(epoch, value):
            reported.append((name, epoch))
            if epoch == kill_at:
                raise Killed

        ctx = RunContext(
            acc, 0, Budget(epochs=3, batch_size=16), tmp_path / name, print, False,
            cache_dir=tmp_path / "cache", checkpoint_every_s=0, on_eval=on_eval,
        )  # fmt: skip
        return train_toy_part(ctx, 0, "diffusion", {"m": 1}, own_training=True)[1]

    with pytest.raises(Killed):  # killed in its second epoch's validation, after epoch 1's save
        unit("guidance-1", kill_at=2)
    summary = unit("guidance-2")
    assert summary["cache"] == "miss" and summary["resumed_after_epoch"] == 1
    first, second = [("guidance-1", e) for e in (1, 2)], [("guidance-2", e) for e in (1, 2, 3)]
    assert reported == first + second  # the pruner of the resumed unit sees the whole curve
    assert not list(tmp_path.rglob(f"*{SUFFIX}"))
    assert unit("guidance-3")["cache"] == "hit"


def test_a_checkpoint_that_cannot_be_saved_leaves_the_previous_one_whole(tmp_path):
    from bench.train.resume import save_checkpoint

    path = tmp_path / "unit" / f"train{SUFFIX}"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(path, {"step": 2, "fn": lambda: None})  # unpicklable: fails mid-save
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]

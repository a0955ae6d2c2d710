"""D-Cube: the U-ViT, the contrastive and cycle losses, KS layer selection, "+Syn"
rebalancing, and a short real run of D-Cube and syn:resnet18 through the runner."""

import json

import numpy as np
import pytest
import torch
from conftest import real_data_dir

from bench.api.errors import BenchError
from bench.api.registry import METHODS
from bench.nn.diffusion import ddpm_scheduler
from methods.dcube.classifier import DCube
from methods.dcube.head import cycle_loss
from methods.dcube.layers import ks_layer_selection, plot_ks
from methods.dcube.stage1 import contrastive_loss, partner_indices, train_stage1
from methods.dcube.syn import synthetic_counts
from methods.dcube.uvit import Stage1Config, UViT

TINY_STAGE1 = {
    "patch_size": 4,
    "dim": 32,
    "depth": 2,
    "heads": 2,
    "epochs": 1,
    "batch_size": 16,
    "eval_every": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(num_classes=3, size=8, chans=1, **kw):
    torch.manual_seed(0)
    return UViT(Stage1Config(**{**TINY_STAGE1, **kw}), size, chans, num_classes).eval()


def test_contrastive_loss_pulls_same_class_together_and_pushes_others_past_the_margin():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 5, 8, generator=g)
    same, diff = torch.zeros(4), torch.ones(4)
    assert torch.equal(
        contrastive_loss(a, a, same, 0.1), torch.zeros(4)
    )  # identical, same class: 0
    far = a + 1.0
    torch.testing.assert_close(
        contrastive_loss(a, far, same, 0.1), torch.full((4,), 40.0)
    )  # d = 5 * 8 * 1^2
    # different classes: margin - d below the margin, 0 beyond it
    close = a + 0.01
    torch.testing.assert_close(
        contrastive_loss(a, close, diff, 0.1), torch.full((4,), 0.1 - 40 * 1e-4)
    )
    assert (contrastive_loss(a, close, diff, 0.1) > 0).all()
    assert torch.equal(contrastive_loss(a, far, diff, 0.1), torch.zeros(4))
    # "mean" averages per feature, so the same pair is now inside the margin
    torch.testing.assert_close(
        contrastive_loss(a, a + 0.2, diff, 0.1, "mean"), torch.full((4,), 0.1 - 0.04)
    )


def test_partner_indices_draw_same_class_half_the_time():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rng = np.random.default_rng(0)
    anchors = rng.integers(0, 100, 4000)
    partners, different = partner_indices(labels, anchors, rng)
    assert np.array_equal(labels[anchors] != labels[partners], different)
    assert 0.46 < different.mean() < 0.54
    _, none = partner_indices(np.zeros(10, dtype=int), np.arange(10), rng)
    assert not none.any()


def test_uvit_blocks_skips_and_class_conditioning():
    unet = tiny_unet(depth=4)
    assert unet.block_names() == ["in0", "in1", "mid", "out0", "out1"]
    assert [
        b.skip_linear is not None for b in (*unet.in_blocks, unet.mid_block, *unet.out_blocks)
    ] == [False] * 3 + [True] * 2
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 900])
    outs = unet.blocks(x, t)
    assert len(outs) == 5 and all(o.shape == (2, 1 + 4, 32) for o in outs)
    assert len(unet.blocks(x, t, upto=2)) == 3
    with torch.no_grad():
        eps0, eps1 = unet(x, t, torch.tensor([0, 0])), unet(x, t, torch.tensor([1, 1]))
        soft = unet(x, t, probs=torch.eye(3)[[1, 1]])
    assert eps0.shape == x.shape and not torch.allclose(eps0, eps1)
    torch.testing.assert_close(soft, eps1)  # a one-hot soft label is the hard label


def test_cycle_loss_has_a_gradient_in_the_paper_form_and_none_in_the_code_form():
    unet = tiny_unet().requires_grad_(False)
    alphas = ddpm_scheduler(1000, 1e-4, 0.02).alphas_cumprod
    x = torch.randn(4, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0])
    logits = torch.randn(4, 3, requires_grad=True)
    paper = cycle_loss(
        unet, x, logits, labels, alphas, "paper", torch.Generator().manual_seed(0), 1000
    )
    paper.backward()
    assert paper.item() > 0 and logits.grad is not None and logits.grad.abs().sum() > 0
    code = cycle_loss(
        unet, x, logits, labels, alphas, "code", torch.Generator().manual_seed(0), 1000
    )
    assert not code.requires_grad and code.item() > 0
    # a prediction equal to the truth costs nothing in either form
    sure = (torch.nn.functional.one_hot(labels, 3) * 50.0).requires_grad_(True)
    assert (
        cycle_loss(
            unet, x, sure, labels, alphas, "code", torch.Generator().manual_seed(0), 1000
        ).item()
        == 0
    )
    assert (
        cycle_loss(
            unet, x, sure, labels, alphas, "paper", torch.Generator().manual_seed(0), 1000
        ).item()
        < 1e-10
    )


def structured_batches(seed, n_batches=8):
    """Per batch: Gaussian noise, a ReLU-like layer (half zeros), a per-image bimodal layer
    (each image's map is mostly +1 or -1), noise again: 64 images of 50 x 32."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        sign = np.where(g.random((64, 1, 1)) < 0.5, -1.0, 1.0)
        out.append(
            [
                g.standard_normal((64, 50, 32)),
                np.maximum(g.standard_normal((64, 50, 32)), 0),
                sign + 0.1 * g.standard_normal((64, 50, 32)),
                g.standard_normal((64, 50, 32)),
            ]
        )
    return out


def test_ks_selection_keeps_structured_layers_and_drops_gaussian_noise(tmp_path):
    names = ["noise", "sparse", "bimodal", "noise2"]
    sel = ks_layer_selection(structured_batches(0), names, alpha=0.05)
    assert sel["kept_names"] == ["sparse", "bimodal"] and sel["separated"] and sel["note"] is None
    assert sel["samples"] == "one per image" and sel["batches"] == 8 and sel["batch_size"] == 64
    layer = {entry["name"]: entry for entry in sel["layers"]}
    assert layer["sparse"]["kept_share"] == layer["bimodal"]["kept_share"] == 1.0
    assert layer["noise"]["kept_share"] <= 0.25 and layer["noise2"]["kept_share"] <= 0.25
    assert layer["sparse"]["p_value"] < 1e-3 and layer["noise"]["p_value"] > 0.05
    assert sel["stability"] > 0.85
    plot_ks(sel, tmp_path / "ks.png")
    assert (tmp_path / "ks.png").stat().st_size > 1000
    # nothing non-Gaussian: nothing separates; the least Gaussian layer is kept, and said
    h = np.random.default_rng(1)
    only_noise = ks_layer_selection(
        [[h.standard_normal((64, 50, 32)) for _ in range(2)] for _ in range(8)], ["a", "b"]
    )
    assert len(only_noise["kept"]) == 1 and "no layer" in only_noise["note"]
    assert not only_noise["separated"]


def test_ks_kept_set_is_stable_across_ks_seeds_and_data_draws():
    names = ["noise", "sparse", "bimodal", "noise2"]
    kept = {
        tuple(ks_layer_selection(structured_batches(data), names, seed=ks)["kept"])
        for data in range(3)
        for ks in range(4)
    }
    assert kept == {(1, 2)}


def test_ks_counts_images_not_pixels():
    """Values of one image are correlated (here: a per-image offset, like a feature map's
    mean): pooling 1,000 of them rejects Gaussianity for every batch although the images'
    values are Gaussian; one value per image does not. This is why the p-value of the
    pooled test followed `ks_samples` instead of the layer."""
    g = np.random.default_rng(0)
    batches = [
        [g.standard_normal((64, 1, 1)) + 0.2 * g.standard_normal((64, 50, 32))] for _ in range(8)
    ]
    assert not ks_layer_selection(batches, ["offsets"])["separated"]
    assert ks_layer_selection(batches, ["offsets"], samples=1000)["separated"]


def test_an_untrained_uvit_separates_no_layer_on_real_images():
    data = real_data_dir() / "breastmnist.npz"
    with np.load(data) as npz:
        images = torch.tensor(npz["train_images"][:, None].astype(np.float32) / 127.5 - 1)
    torch.manual_seed(0)
    unet = UViT(Stage1Config(patch_size=4, dim=64, depth=4, heads=4), 28, 1, 2).eval()
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        idx = torch.as_tensor(rng.permutation(len(images))[:64])
        with torch.no_grad():
            t = torch.randint(1, 1000, (64,), generator=gen)
            batches.append([h.numpy() for h in unet.blocks(images[idx], t)])
    sel = ks_layer_selection(batches, unet.block_names())
    assert not sel["separated"], sel["layers"]
    assert all(layer["p_value"] > 0.05 for layer in sel["layers"])


def test_feature_layer_choices_follow_the_authors_code():
    spec = type("S", (), {"size": 8, "channels": 1, "num_classes": 3})()
    cfg = METHODS.get("dcube").make_config(
        {"stage1": {**TINY_STAGE1, "depth": 12}, "feature_layers": "code"}
    )
    m = DCube(cfg, spec)
    unet = UViT(m.s1, 8, 1, 3)
    assert m.fixed_layers(unet) == [6, 8, 9]  # mid block, out_blocks[1], out_blocks[2]
    assert [unet.block_names()[i] for i in m.fixed_layers(unet)] == ["mid", "out1", "out2"]
    m.config.feature_layers = "last"
    assert m.fixed_layers(unet) == [12]
    m.config.feature_layers = [0, 40]
    with pytest.raises(BenchError, match="out of range"):
        m.fixed_layers(unet)
    with pytest.raises(BenchError, match="did you mean 'epochs'"):
        METHODS.get("dcube").make_config({"stage1": {"epoch": 3}})


def test_worst_selection_takes_the_layers_the_ks_test_drops(tmp_path):
    """The paper's Table VI "Worst Selection": the complement of the KS choice, recorded as
    such, on the same batches (same seeds) as the "ks" choice."""
    from bench.api.dataset import SplitData
    from bench.api.method import Budget, RunContext
    from bench.train.device import make_accelerator

    spec = type("S", (), {"size": 8, "channels": 1, "num_classes": 2, "name": "toy"})()
    g = np.random.default_rng(0)
    train = SplitData(
        g.integers(0, 256, (80, 8, 8, 1), dtype=np.uint8), np.arange(80) % 2, np.arange(80)
    )
    ctx = RunContext(make_accelerator("fp32", cpu=True)[0], 0, Budget(epochs=1), tmp_path)
    chosen = {}
    for choice in ("ks", "worst"):
        m = DCube(
            METHODS.get("dcube").make_config({"stage1": TINY_STAGE1, "feature_layers": choice}),
            spec,
        )
        torch.manual_seed(0)
        m.unet = tiny_unet(num_classes=2)
        chosen[choice] = m.select_layers(train, ctx)
    ks, worst = chosen["ks"], chosen["worst"]
    assert worst["method"] == "ks-worst" and ks["method"] == "ks"
    assert worst["layers"] == ks["layers"] and worst["batches"] == 8
    n = len(ks["layers"])
    most_gaussian = int(np.argmin([layer["statistic"] for layer in ks["layers"]]))
    assert worst["kept"] == (sorted(set(range(n)) - set(ks["kept"])) or [most_gaussian])
    assert not set(worst["kept"]) & set(ks["kept"]) or len(ks["kept"]) == n
    assert worst["kept_names"] == [m.unet.block_names()[i] for i in worst["kept"]]


def test_a_target_ratio_tops_classes_up_without_removing_any_and_dcube_nosub_is_sized_like_dcube():
    # the paper's 2:2:3: the class furthest above its share sets the scale
    assert synthetic_counts(np.array([100, 100, 40]), 1.0, None, [2, 2, 3]).tolist() == [0, 0, 110]
    assert synthetic_counts(np.array([10, 50]), 1.0, None, [2, 3]).tolist() == [24, 0]
    with pytest.raises(BenchError, match="target_ratio needs 2 positive numbers"):
        synthetic_counts(np.array([10, 50]), 1.0, None, [1, 0])
    from bench.engine.config import load_suite
    from bench.engine.planning import plan_units
    from bench.report.aggregate import ablation_base

    suite = load_suite("classification")
    units, _ = plan_units(
        suite, suite.preset("standard"), ["breastmnist"], ["dcube", "dcube_nosub"], [0], "r", "bf16"
    )
    by = {u.method: u.config for u in units}
    assert by["dcube_nosub"] == {**by["dcube"], "use_sub_features": False}
    assert ablation_base("dcube_nosub") == "dcube"  # its own table, against dcube


def test_synthetic_counts_rebalance_as_requested():
    counts = np.array([147, 399])
    assert synthetic_counts(counts, 1.0, None).tolist() == [252, 0]
    assert synthetic_counts(counts, 0.5, None).tolist() == [53, 0]
    assert synthetic_counts(np.array([10, 20, 40]), 1.0, [5, 0, 1]).tolist() == [5, 0, 1]
    with pytest.raises(BenchError, match="3 non-negative counts"):
        synthetic_counts(np.array([10, 20, 40]), 1.0, [5, 0])


def test_stage1_training_lowers_the_validation_noise_loss(data_dir, tmp_path):
    from bench.api.dataset import SplitData
    from bench.api.method import Budget, RunContext
    from bench.data.load import dataset_source
    from bench.train.device import make_accelerator

    bundle = dataset_source("breastmnist").load(data_dir=str(data_dir))
    tr, va = bundle.splits["train"], bundle.splits["val"]
    train = SplitData(tr.images[:128], tr.labels[:128], tr.ids[:128])
    val = SplitData(va.images[:64], va.labels[:64], va.ids[:64])
    cfg = Stage1Config(**{**TINY_STAGE1, "epochs": 6, "lr": 1e-3})
    torch.manual_seed(0)
    unet = UViT(cfg, 28, 1, 2)
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        Budget(epochs=1, batch_size=16, eval_batch_size=64),
        tmp_path,
        progress=False,
    )
    summary = train_stage1(unet, cfg, train, val, ctx, 28)
    val_losses = [h["val_noise_mse"] for h in summary["history"]]
    assert summary["steps"] == 6 * 8 and val_losses[-1] < 0.9 * val_losses[0]
    assert summary["best_val_value"] == min(val_losses)
    # 48 steps do not make a denoiser: its noise loss stays above the per-pixel linear one's
    floor = summary["noise_floor"]
    assert floor["unit"] == "per image" and 0 < floor["linear_denoiser"] < 784
    assert not floor["beaten"] and floor["best_val"] > floor["linear_denoiser"]


def test_stage1_patience_is_its_own_and_a_later_field_keeps_earlier_hashes(tmp_path, monkeypatch):
    """`stage1.patience` reaches stage 1's loop (the head's budget keeps its own), and at
    its default (None) it is left out of the recorded stage-1 settings, so D-Cube and +Syn
    units made before it existed keep their hash and their cached stage 1."""
    import methods.dcube.stage1 as stage1
    from bench.api.dataset import SplitData
    from bench.api.method import Budget, RunContext
    from bench.train.device import make_accelerator
    from methods.dcube.uvit import stage1_identity

    seen = {}

    def fake_loop(module, step, ctx, *args, **kw):
        seen["patience"] = ctx.budget.patience
        return {"best_val_value": 1.0}

    monkeypatch.setattr(stage1, "train_loop", fake_loop)
    monkeypatch.setattr(stage1, "linear_denoiser_mse", lambda *a, **k: 1.0)
    data = SplitData(np.zeros((4, 8, 8, 1), np.uint8), np.arange(4) % 2, np.arange(4))
    budget = Budget(epochs=1, patience=7)
    ctx = RunContext(make_accelerator("fp32", cpu=True)[0], 0, budget, tmp_path, progress=False)
    cfg = Stage1Config(**{**TINY_STAGE1, "patience": 2})
    stage1.train_stage1(UViT(cfg, 8, 1, 2), cfg, data, data, ctx, 8)
    assert seen["patience"] == 2 and ctx.budget.patience == 7
    assert "patience" not in stage1_identity(TINY_STAGE1)
    assert stage1_identity({**TINY_STAGE1, "patience": 3})["patience"] == 3
    cfg = METHODS.get("dcube").make_config({"stage1": TINY_STAGE1})
    assert "patience" not in cfg.stage1 and Stage1Config(**cfg.stage1).patience is None


def test_a_shared_stage1_is_trained_once_for_every_seed(tmp_path):
    from bench.api.dataset import SplitData
    from bench.api.method import Budget, RunContext
    from bench.train.device import make_accelerator
    from methods.dcube.stage1 import stage1_model

    spec = type("S", (), {"size": 8, "channels": 1, "num_classes": 2, "task": "binary"})()
    g = np.random.default_rng(0)
    data = SplitData(
        g.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8), np.arange(32) % 2, np.arange(32)
    )
    acc = make_accelerator("fp32", cpu=True)[0]

    def shared(unit_seed, cache):
        torch.manual_seed(unit_seed)  # as the runner seeds each unit
        ctx = RunContext(
            acc, unit_seed, Budget(epochs=1, batch_size=16), tmp_path / f"w{unit_seed}",
            progress=False, cache_dir=tmp_path / cache,
        )  # fmt: skip
        unet, summary = stage1_model(
            Stage1Config(**{**TINY_STAGE1, "seed": 0}), spec, data, data, ctx
        )
        return torch.cat([p.flatten() for p in unet.parameters()]), summary["cache"]

    # the shared one (trained with seed 0) is trained by whichever unit comes first
    runs = [shared(s, "a") for s in (1, 0, 2)]
    assert [cache for _, cache in runs] == ["miss", "hit", "hit"]
    assert all(torch.equal(runs[0][0], w) for w, _ in runs)
    alone, cache = shared(0, "b")  # seed 0 first, in another cache: the same model
    assert cache == "miss" and torch.equal(alone, runs[0][0])


def test_classification_suite_lists_dcube_and_a_syn_variant_sharing_stage1_options():
    from bench.api.method import config_dict
    from bench.engine.config import load_suite

    suite = load_suite("classification")
    entries = {m.name: m for m in suite.methods}
    assert {"dcube", "syn:resnet18", "syn:vit_tiny_patch16_224"} <= set(entries)
    for preset in suite.presets:  # smoke, standard, full
        p = suite.preset(preset)
        dcube = METHODS.get("dcube").make_config(suite.options_for(entries["dcube"], p))
        for base_name in ("resnet18", "vit_tiny_patch16_224"):
            syn = METHODS.get(f"syn:{base_name}").make_config(
                suite.options_for(entries[f"syn:{base_name}"], p)
            )
            base = METHODS.get(base_name).make_config(suite.options_for(entries[base_name], p))
            assert dcube.stage1 == syn.stage1  # one cached stage-1 model serves all
            assert syn.base_options == config_dict(base)  # +Syn trains the suite's own baseline


@pytest.mark.slow
def test_dcube_and_syn_run_in_a_suite_sharing_the_stage1_model(data_dir, tmp_path, monkeypatch):
    """Real BreastMNIST, tiny budgets: D-Cube records its KS selection and writes the
    p-value plot beside the record; syn:resnet18 reuses D-Cube's cached stage-1 model
    and balances the classes (147 malignant + 252 synthetic = 399 benign/normal); its
    synthetic set is cached whole or not at all (another unit of the seed may load it)."""
    import methods.dcube.syn as syn_module
    from bench.engine.runner import run_suite

    cached = []
    atomic = syn_module.atomic_write
    monkeypatch.setattr(
        syn_module, "atomic_write", lambda path, write: (cached.append(path), atomic(path, write))
    )

    stage1 = {**TINY_STAGE1, "epochs": 2}
    suite = tmp_path / "s.yaml"
    suite.write_text(
        json.dumps(
            {
                "description": "tiny",
                "task": "classification",
                "datasets": ["breastmnist"],
                "seeds": [0],
                "reference": "dcube",
                "methods": [
                    {
                        "name": "dcube",
                        "options": {
                            "stage1": stage1,
                            "sub_model": "resnet18",
                            "sub_small_stem": True,
                        },
                    },
                    {
                        "name": "syn:resnet18",
                        "options": {
                            "stage1": stage1,
                            "sampler": "ddim",
                            "sampling_steps": 4,
                            "base_options": {"input_size": 32},
                        },
                    },
                ],
                "presets": {
                    "smoke": {
                        "budget": {
                            "epochs": 1,
                            "batch_size": 16,
                            "eval_batch_size": 256,
                            "max_steps": 3,
                        }
                    }
                },
            }
        )
    )
    outcomes = run_suite(
        str(suite), results_dir=tmp_path / "results", work_dir=tmp_path / "runs", progress=False
    )
    assert [o.status for o in outcomes] == ["ok", "ok"], outcomes
    dcube_path = next((tmp_path / "results").rglob("dcube/*/seed0.json"))
    dcube = json.loads(dcube_path.read_text())
    layers = dcube["selection"]["layers"]
    assert [layer["name"] for layer in layers["layers"]] == ["in0", "mid", "out0"]
    assert all(0 <= layer["p_value"] <= 1 for layer in layers["layers"]) and layers["kept"]
    majority = [layer["index"] for layer in layers["layers"] if layer["kept_share"] >= 0.5]
    assert layers["kept"] == majority or (layers["note"] and not layers["separated"])
    assert 0 <= layers["stability"] <= 1 and layers["batches"] == 8
    assert (dcube_path.parent / layers["plot"]).is_file()
    assert dcube["selection"]["stage1"]["cache"] == "miss"
    probe = dcube["priors"]["U-ViT features, linear probe"]  # D-Cube's counterpart of a prior
    assert 0 <= probe["test"]["auroc"] <= 1 and sum(
        probe["test"]["predicted_share"]
    ) == pytest.approx(1)
    syn_path = next((tmp_path / "results").rglob("syn-resnet18/*/seed0.json"))
    syn = json.loads(syn_path.read_text())["selection"]["synthetic"]
    assert (
        syn["stage1"]["cache"] == "hit"
        and syn["stage1"]["file"] == dcube["selection"]["stage1"]["file"]
    )
    assert (
        syn["counts_before"] == [147, 399]
        and syn["added"] == [252, 0]
        and syn["counts_after"] == [399, 399]
    )
    assert (syn_path.parent / syn["samples_png"]).is_file()
    assert len(cached) == 1 and cached[0].parent.name == "dcube_syn"
    with np.load(cached[0]) as f:
        assert np.bincount(f["labels"]).tolist() == [252] and len(f["images"]) == 252

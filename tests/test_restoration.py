"""Restoration: paired data from real images with a declared degradation, splits by
source image, per-image PSNR/SSIM/NMAE/RMSE (scikit-image), each method improving on
the noisy input after a short run, and the suite end to end."""

import json

import numpy as np
import pytest
import torch

from bench.api.errors import DataError
from bench.api.registry import METHODS
from bench.data.load import load_bundle
from bench.metrics.image_quality import per_image_quality

pytestmark = pytest.mark.usefixtures("one_thread")

BREAST_NOISY = {
    "name": "breast_g20",
    "loader": "paired",
    "images": ["medmnist:breastmnist"],
    "degradation": {"kind": "gaussian", "sigma": 0.2},
    "patch": 16,
    "train_stride": 12,
    "max_patches_per_image": 4,
}
TINY = {
    "dncnn": {"depth": 6, "width": 32},
    "pix2pix": {"width": 16},
    "diffusion_restorer": {
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sampling_steps": 10,
        "eval_every": 10,
        "lr": 5e-4,
    },
}


def test_psnr_ssim_agree_with_scikit_image_and_nmae_rmse_follow_their_definitions():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = np.random.default_rng(0)
    target = g.random((3, 16, 16, 1))
    output = np.clip(target + g.normal(0, 0.05, target.shape), 0, 1)
    q = per_image_quality(output, target, data_range=1.0)
    for i in range(3):
        assert q["psnr"][i] == pytest.approx(
            peak_signal_noise_ratio(target[i], output[i], data_range=1.0)
        )
        assert q["psnr"][i] == pytest.approx(
            10 * np.log10(1 / np.mean((output[i] - target[i]) ** 2))
        )
        assert q["ssim"][i] == pytest.approx(
            structural_similarity(target[i], output[i], data_range=1.0, channel_axis=-1, win_size=7)
        )
        assert q["nmae"][i] == pytest.approx(np.abs(output[i] - target[i]).mean())
        assert q["rmse"][i] == pytest.approx(np.sqrt(np.mean((output[i] - target[i]) ** 2)))
    with np.errstate(divide="ignore"):  # PSNR of a perfect restoration is infinite
        assert per_image_quality(target, target)["ssim"] == pytest.approx(1.0)
    assert per_image_quality(2 * output, 2 * target, data_range=2.0)["psnr"] == pytest.approx(
        q["psnr"]
    )


def test_identity_restoration_scores_the_degradations_own_psnr():
    bundle = load_bundle(
        {
            "name": "pkg",
            "loader": "paired",
            "images": ["skimage"],
            "degradation": {"kind": "gaussian", "sigma": 0.1},
            "patch": 32,
            "max_patches_per_image": 16,
        }
    )
    test = bundle.splits["test"]
    identity = METHODS.get("identity").cls(None, bundle.spec).restore(test.inputs, None)
    psnr = per_image_quality(identity, test.targets)["psnr"]
    assert psnr.mean() == pytest.approx(
        20.0, abs=0.3
    )  # sigma 0.1 of the data range: 20 log10(1 / 0.1) dB


def test_splits_keep_every_source_image_and_its_patches_out_of_training():
    bundle = load_bundle(
        {
            "name": "pkg",
            "loader": "paired",
            "images": ["skimage", "pydicom"],
            "degradation": {"kind": "poisson", "peak": 30},
            "patch": 32,
            "train_stride": 16,
        }
    )
    images = {s: set(split.images) for s, split in bundle.splits.items()}
    assert (
        all(images.values())
        and not (images["train"] & images["test"])
        and not (images["train"] & images["val"])
    )
    assert bundle.duplicates_across_splits == 0
    # pydicom's MR slice in seven encodings is one image: no pixel-identical patch in two splits
    hashes = {s: {t.tobytes() for t in split.targets} for s, split in bundle.splits.items()}
    assert not (hashes["train"] & hashes["test"]) and not (hashes["train"] & hashes["val"])
    again = load_bundle(
        {
            "name": "pkg",
            "loader": "paired",
            "images": ["skimage", "pydicom"],
            "degradation": {"kind": "poisson", "peak": 30},
            "patch": 32,
            "train_stride": 16,
        }
    )
    assert again.split_hash == bundle.split_hash  # deterministic, noise included
    with pytest.raises(DataError, match="declared degradation"):
        load_bundle({"name": "x", "loader": "paired", "images": ["skimage"]})


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,steps", [("dncnn", 40), ("pix2pix", 150), ("diffusion_restorer", 60)]
)
def test_a_short_training_run_improves_psnr_over_the_noisy_input(name, steps, data_dir, tmp_path):

    from bench.api.method import Budget, RunContext
    from bench.data.paired import PairedSplit
    from bench.train.device import make_accelerator

    bundle = load_bundle(BREAST_NOISY, data_dir=str(data_dir))
    tr, va, te = bundle.splits["train"], bundle.splits["val"], bundle.splits["test"]
    train = PairedSplit(tr.inputs[:1024], tr.targets[:1024], tr.ids[:1024], tr.images[:1024])
    val = PairedSplit(va.inputs[:32], va.targets[:32], va.ids[:32], va.images[:32])
    spec = METHODS.get(name)
    method = spec.cls(spec.make_config(TINY[name]), bundle.spec)
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        Budget(epochs=5, batch_size=32, eval_batch_size=256, max_steps=steps),
        tmp_path,
        progress=False,
    )
    summary = method.fit(train, val, ctx)
    held_out = te.inputs[:64]
    noisy = per_image_quality(held_out, te.targets[:64])["psnr"].mean()
    restored = per_image_quality(method.restore(held_out, ctx), te.targets[:64])["psnr"].mean()
    assert restored > noisy + 0.5, (name, noisy, restored)
    if name == "diffusion_restorer":  # 60 steps: it uses the degraded input, beyond the floor
        floor = summary["noise_floor"]
        assert floor["beaten"] and floor["best_val"] < floor["linear_denoiser"] < 1, floor


def test_an_untrained_diffusion_restorer_does_not_beat_its_noise_floor(data_dir, tmp_path):
    """One optimiser step: its noise loss on the validation probe is above the per-pixel
    linear denoiser's (which knows only the training targets' pixel moments), and the
    record's block says so; the leaderboard's untrained-stage note reads this block."""
    from bench.api.method import Budget, RunContext
    from bench.data.paired import PairedSplit
    from bench.train.device import make_accelerator

    bundle = load_bundle(BREAST_NOISY, data_dir=str(data_dir))
    tr, va = bundle.splits["train"], bundle.splits["val"]
    train = PairedSplit(tr.inputs[:256], tr.targets[:256], tr.ids[:256], tr.images[:256])
    val = PairedSplit(va.inputs[:16], va.targets[:16], va.ids[:16], va.images[:16])
    spec = METHODS.get("diffusion_restorer")
    torch.manual_seed(0)
    method = spec.cls(
        spec.make_config({**TINY["diffusion_restorer"], "sampling_steps": 2}), bundle.spec
    )
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0], 0,
        Budget(epochs=1, batch_size=32, eval_batch_size=256, max_steps=1), tmp_path, progress=False,
    )  # fmt: skip
    floor = method.fit(train, val, ctx)["noise_floor"]
    assert floor["unit"] == "per pixel" and 0 < floor["linear_denoiser"] < 1
    assert not floor["beaten"] and floor["best_val"] > floor["linear_denoiser"]


@pytest.mark.slow
def test_restoration_suite_records_per_image_scores_strips_and_the_survey_layout(
    data_dir, tmp_path
):
    from bench.engine.runner import run_suite
    from bench.tools.leaderboard import write_leaderboard

    suite = tmp_path / "rest.yaml"
    suite.write_text(
        json.dumps(
            {
                "description": "tiny restoration",
                "task": "restoration",
                "seeds": [0],
                "reference": "dncnn",
                "datasets": [{**BREAST_NOISY, "max_patches_per_image": 1}],
                "methods": [{"name": "dncnn", "options": TINY["dncnn"]}, "identity"],
                "presets": {
                    "smoke": {
                        "budget": {
                            "epochs": 1,
                            "batch_size": 32,
                            "eval_batch_size": 256,
                            "max_steps": 5,
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
    path = next((tmp_path / "results").rglob("identity/*/seed0.json"))
    rec = json.loads(path.read_text())
    assert rec["metrics"]["test"]["psnr"] == pytest.approx(
        rec["evaluation"]["input_scores_test"]["psnr"]
    )
    assert (path.parent / rec["evaluation"]["strip_png"]).is_file()
    lo, hi = rec["evaluation"]["ci95_test"]["psnr"]  # over source images (one patch each here)
    assert (
        lo < rec["metrics"]["test"]["psnr"] < hi and rec["evaluation"]["n_source_images_test"] >= 50
    )
    with np.load(path.with_suffix(".npz")) as npz:
        n_test = rec["data"]["n"]["test"]  # one patch per test image: 156 in the official file
        assert (
            n_test >= 50
            and npz["test_psnr"].shape == (n_test,)
            and npz["test_ids"].shape == (n_test,)
        )
    md, _ = write_leaderboard(str(suite), results_dir=tmp_path / "results", out_dir=tmp_path / "lb")
    text = md.read_text()
    assert "## Survey Table 12 layout (denoising): RMSE, PSNR, SSIM" in text
    assert (
        "| method | breast_g20 (smoke) RMSE | breast_g20 (smoke) PSNR | breast_g20 (smoke) SSIM |"
        in text
    )
    assert "| method | seeds | rmse | nmae | psnr | ssim |" in text
    assert "PSNR, bootstrap 95 % interval over the" in text and "test source images" in text


@pytest.mark.slow
def test_the_diffusion_restorers_weight_average_validates_and_restores(data_dir, tmp_path):
    """ema_decay: the same optimisation (identical losses), but validation and restoration
    use the average, so their scores differ."""
    from bench.api.method import Budget, RunContext
    from bench.data.paired import PairedSplit
    from bench.train.device import make_accelerator

    bundle = load_bundle(BREAST_NOISY, data_dir=str(data_dir))
    tr, va, te = bundle.splits["train"], bundle.splits["val"], bundle.splits["test"]
    train = PairedSplit(tr.inputs[:128], tr.targets[:128], tr.ids[:128], tr.images[:128])
    val = PairedSplit(va.inputs[:16], va.targets[:16], va.ids[:16], va.images[:16])
    spec = METHODS.get("diffusion_restorer")
    runs = {}
    for decay in (None, 0.9):
        torch.manual_seed(0)
        options = {**TINY["diffusion_restorer"], "eval_every": 2, "ema_decay": decay}
        method = spec.cls(spec.make_config(options), bundle.spec)
        ctx = RunContext(
            make_accelerator("fp32", cpu=True)[0],
            0,
            Budget(epochs=4, batch_size=32, eval_batch_size=256),
            tmp_path / str(decay),
            progress=False,
        )
        history = method.fit(train, val, ctx)["history"]
        runs[decay] = (history, method.restore(te.inputs[:8], ctx))
    (plain, plain_out), (averaged, averaged_out) = runs[None], runs[0.9]
    assert [h["loss"] for h in averaged] == [h["loss"] for h in plain]
    assert [h.get("val_psnr") for h in averaged] != [h.get("val_psnr") for h in plain]
    assert not np.allclose(averaged_out, plain_out)


def test_diffusion_restorer_averages_num_samples_posterior_samples(tmp_path):
    """num_samples = 2 returns the mean of the first sample (the same draw as num_samples = 1)
    and a second one; fewer than 1 is refused."""
    from bench.api.errors import BenchError
    from bench.api.method import Budget, RunContext
    from bench.nn.diffusion import diffusers_unet
    from bench.train.device import make_accelerator

    bundle = load_bundle({**BREAST_NOISY, "max_patches_per_image": 1})
    inputs = bundle.splits["test"].inputs[:4]
    spec = METHODS.get("diffusion_restorer")
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        Budget(eval_batch_size=8),
        tmp_path,
        progress=False,
    )
    torch.manual_seed(0)
    unet = diffusers_unet(bundle.spec.size, 2, 1, (32, 64, 64), 1, 8, 8, 0.0).eval()
    outs = {}
    for k in (1, 2):
        method = spec.cls(
            spec.make_config({**TINY["diffusion_restorer"], "num_samples": k}), bundle.spec
        )
        method.unet = unet
        outs[k] = method.restore(inputs, ctx)
    second = 2 * outs[2] - outs[1]  # what the second sample restored
    assert (
        np.all(second > -1e-5)
        and np.all(second < 1 + 1e-5)
        and not np.allclose(second, outs[1], atol=1e-3)
    )
    with pytest.raises(BenchError, match="num_samples must be at least 1"):
        spec.make_config({"num_samples": 0})


def test_dncnn_reflect_padding_keeps_a_flat_patch_flat_to_its_edges():
    """The rim of zero padding (the paper's) on a flat patch, and none with reflection."""
    from baselines.dncnn import DnCNNNet

    flat = torch.full((1, 1, 16, 16), 0.4)
    spread = {}
    for mode in ("zeros", "reflect"):
        torch.manual_seed(0)
        net = DnCNNNet(1, depth=5, width=16, padding_mode=mode).eval()
        with torch.no_grad():
            noise = net.body(flat)  # the estimated noise, subtracted from the patch
            spread[mode] = float(noise.std() / noise.abs().mean())
    assert spread["zeros"] > 0.01 and spread["reflect"] < 1e-5, spread


def test_pix2pix_resize_upsampling_makes_no_checkerboard_where_transposed_convs_do():
    from baselines.pix2pix import UNetGenerator, upsample_conv

    flat = torch.ones(1, 8, 8, 8)
    interior = {}
    for how in ("transpose", "resize"):
        torch.manual_seed(0)
        with torch.no_grad():
            out = upsample_conv(8, 4, how, bias=False)(flat)
        assert out.shape == (1, 4, 16, 16)
        interior[how] = float(out[..., 2:-2, 2:-2].std(dim=(-1, -2)).max())
    assert interior["transpose"] > 1e-3 and interior["resize"] < 1e-6
    torch.manual_seed(0)
    assert UNetGenerator(1, 16, 8, "resize")(torch.zeros(2, 1, 16, 16)).shape == (2, 1, 16, 16)

"""CARD and DiffMIC (v1): the prior-mean process, its reverse chain, the MMD term,
CARD's voting readout and interval widths, and short real runs through the runner."""

import json

import numpy as np
import pytest
import torch

from bench.api.registry import METHODS
from bench.engine.config import load_suite
from bench.metrics.classification import compute_all
from bench.nn.diffusion import (
    antithetic_timesteps,
    ddpm_scheduler,
    noise_draws,
    prior_mean_noising,
    q_sample,
    sample_prior_mean,
)
from bench.nn.labels import gaussian_mmd
from bench.tools.leaderboard import write_leaderboard
from methods.card import sample_statistics

TINY = {
    "image_size": 28,
    "small_input_stem": True,
    "feature_dim": 32,
    "sampling_steps": 20,
    "eval_every": 1,
}


def test_prior_mean_noising_is_cards_formula():
    sched = ddpm_scheduler(1000, 1e-4, 0.02)
    g = torch.Generator().manual_seed(0)
    y0 = torch.eye(3)[torch.tensor([0, 2, 1, 1])]
    prior = torch.softmax(torch.randn(4, 3, generator=g), dim=1)
    noise = torch.randn(4, 3, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ab = sched.alphas_cumprod[t][:, None]
    expected = ab.sqrt() * y0 + (1 - ab.sqrt()) * prior + (1 - ab).sqrt() * noise
    torch.testing.assert_close(
        prior_mean_noising(sched.alphas_cumprod, y0, prior, t, noise), expected
    )
    # at the last step the label is (almost) gone: y_T ~ prior + noise
    assert torch.allclose(
        q_sample(sched.alphas_cumprod, y0, torch.tensor([999] * 4), noise), noise, atol=0.01
    )


def test_reverse_chain_equals_cards_posterior_with_prior_mean():
    """diffusers DDPM on y - prior reproduces CARD's p_sample (gamma_0, gamma_1, gamma_2)."""
    T = 1000
    sched = ddpm_scheduler(T, 1e-4, 0.02)
    sched.set_timesteps(T)
    betas, ab = sched.betas.double(), sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1)
    prior = torch.softmax(torch.randn(5, 3, generator=g), dim=1).double()
    y_t = torch.randn(5, 3, generator=g).double()
    eps = torch.randn(5, 3, generator=g).double()
    for t in (999, 500, 37, 1):
        y0_hat = (y_t - (1 - ab[t].sqrt()) * prior - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        g0 = betas[t] * ab[t - 1].sqrt() / (1 - ab[t])
        g1 = (1 - ab[t - 1]) * (1 - betas[t]).sqrt() / (1 - ab[t])
        g2 = 1 + (ab[t].sqrt() - 1) * ((1 - betas[t]).sqrt() + ab[t - 1].sqrt()) / (1 - ab[t])
        var = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]
        z = torch.randn(5, 3, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        card = g0 * y0_hat + g1 * y_t + g2 * prior + var.sqrt() * z
        ours = (
            sched.step(eps, t, y_t - prior, generator=torch.Generator().manual_seed(t)).prev_sample
            + prior
        )
        torch.testing.assert_close(ours, card, rtol=1e-4, atol=1e-4)  # float32 schedule
    # last step: the reparameterised y0, no noise
    sched.set_timesteps(T)
    last = sched.step(eps, 0, y_t - prior).prev_sample + prior
    expected = (y_t - (1 - ab[0].sqrt()) * prior - (1 - ab[0]).sqrt() * eps) / ab[0].sqrt()
    torch.testing.assert_close(last, expected, rtol=1e-6, atol=1e-6)


def test_sample_prior_mean_recovers_label_with_oracle_noise():
    """With the true noise predicted (an oracle that knows y0), the chain ends at y0."""
    sched = ddpm_scheduler(1000, 1e-4, 0.02)
    sched.set_timesteps(50)
    ab = sched.alphas_cumprod
    y0 = torch.eye(4)[torch.tensor([3, 0, 2])]
    prior = torch.full((3, 4), 0.25)

    def oracle(y_t, t):
        a = ab[t][:, None]
        return (y_t - prior - a.sqrt() * (y0 - prior)) / (1 - a).sqrt()

    out = sample_prior_mean(oracle, prior, sched, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, y0, atol=1e-3, rtol=0)


def test_antithetic_timesteps_pair_up():
    t = antithetic_timesteps(9, 1000, torch.Generator().manual_seed(0))
    assert t.shape == (9,) and t.min() >= 0 and t.max() <= 999
    half = 9 // 2 + 1
    assert torch.equal(t[half:], 999 - t[: 9 - half])


def test_noise_draws_one_per_image_is_cards_and_more_share_the_image():
    """One draw per image reproduces CARD's (t, noise) stream; D draws give t [B, D] and
    noise [B, D, C], and the head scores each draw as if it were alone (eval mode)."""
    t1, n1 = noise_draws(6, 3, 1, 1000, torch.Generator().manual_seed(0), "cpu")
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(t1[:, 0], antithetic_timesteps(6, 1000, g))
    torch.testing.assert_close(n1[:, 0], torch.randn(6, 3, generator=g))
    t, noise = noise_draws(4, 3, 5, 1000, torch.Generator().manual_seed(1), "cpu")
    assert t.shape == (4, 5) and noise.shape == (4, 5, 3) and len(set(t.flatten().tolist())) > 5
    from bench.nn.card_net import CARDNet
    from methods.card import CARDConfig

    net = CARDNet.from_config(CARDConfig(feature_dim=16, small_input_stem=True), 3, 1).eval()
    prior, feature = torch.softmax(torch.randn(4, 3), 1), torch.randn(4, 16)
    y_t = prior_mean_noising(
        ddpm_scheduler(1000, 1e-4, 0.02).alphas_cumprod,
        torch.eye(3)[[0, 1, 2, 0]][:, None],
        prior[:, None],
        t,
        noise,
    )
    with torch.no_grad():
        together = net(y_t, t, prior, feature)
        alone = torch.stack([net(y_t[:, d], t[:, d], prior, feature) for d in range(5)], dim=1)
    torch.testing.assert_close(together, alone)


def test_gaussian_mmd_zero_for_same_sample_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 5, generator=g)
    assert gaussian_mmd(a, a).abs() < 1e-6
    b = torch.randn(64, 5, generator=g)
    assert 0 < gaussian_mmd(a, b) < gaussian_mmd(a, b + 1.0) < gaussian_mmd(a, b + 3.0)


def test_card_readout_votes_and_interval_width():
    # 4 samples, 1 image, 3 classes: three samples say class 2, one says class 0
    s = torch.tensor([[[0.1, 0.0, 0.9]], [[0.0, 0.2, 1.0]], [[1.0, 0.0, 0.1]], [[0.2, 0.1, 0.8]]])
    out = sample_statistics(s)
    assert out["vote"].tolist() == [2]
    assert out["vote_agreement"].item() == pytest.approx(0.75)
    raw = -((s[:, 0, 2] - 1) ** 2)
    expected = torch.quantile(raw, 0.975) - torch.quantile(raw, 0.025)
    assert out["piw"].item() == pytest.approx(expected.item())
    torch.testing.assert_close(out["probs"], torch.softmax(-((s - 1) ** 2), dim=2).mean(0))
    # identical samples: no spread, unanimous
    same = sample_statistics(s[:1].repeat(5, 1, 1))
    assert same["piw"].item() == 0 and same["vote_agreement"].item() == 1


def test_card_readout_temperature_sharpens_or_flattens_each_sample():
    s = torch.tensor([[[0.1, 0.0, 0.9]], [[0.0, 0.2, 1.0]]])
    raw = -((s - 1) ** 2)
    for t in (0.5, 2.0):
        out = sample_statistics(s, t)
        torch.testing.assert_close(out["probs"], torch.softmax(raw / t, dim=2).mean(0))
        torch.testing.assert_close(out["vote_share"], torch.tensor([[0.0, 0.0, 1.0]]))
    assert sample_statistics(s, 0.5)["probs"].max() > sample_statistics(s, 2.0)["probs"].max()


def test_card_tunes_its_temperature_with_the_authors_adam_from_softplus_zero():
    """--tune_T as in the authors' code: T = softplus(s), s = 0, Adam lr 0.01, one epoch over
    the training batches. Adam's steps are about lr each, so T stays near softplus(0) = 0.69
    after a few batches, whatever the NLL's minimum (here T -> 0: the labels are fit)."""
    from methods.card import nll_at, tune_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 64)
    raw = -((np.eye(3)[labels] + 0.01 * rng.normal(size=(64, 3)) - 1) ** 2)  # fit: y0 ~ one-hot
    t_one, _ = tune_temperature(raw, labels, batch_size=64, epochs=1, lr=0.01)
    assert t_one == pytest.approx(
        float(torch.nn.functional.softplus(torch.tensor(-0.01))), rel=1e-6
    )
    t_four, nll = tune_temperature(raw, labels, batch_size=16, epochs=1, lr=0.01)
    assert t_four == pytest.approx(
        float(torch.nn.functional.softplus(torch.tensor(-0.04))), rel=1e-3
    )
    assert nll == pytest.approx(nll_at(raw, labels, t_four)) and nll < nll_at(raw, labels, 1.0)
    # samples that scatter over the wrong classes: a flatter readout, T above softplus(0)
    noisy = -((np.eye(3)[rng.integers(0, 3, 64)] - 1) ** 2)
    assert tune_temperature(noisy, labels, 16, 1, 0.01)[0] > float(np.log(2))


def test_the_heads_one_t_inference_path_is_the_per_point_function():
    """A sampler's step (every point at one t, eval mode) takes a folded path; it must be
    the per-point forward up to float rounding, whatever the BatchNorm statistics."""
    from bench.nn.heads import TimeScaledMLP

    torch.manual_seed(0)
    head = TimeScaledMLP(6, 64, 3, 101)
    with torch.no_grad():  # running statistics away from 0 / 1
        for _ in range(5):
            head(torch.randn(32, 2, 6) * 3 + 1, torch.randint(0, 101, (32, 2)), torch.rand(32, 64))
    head.eval()
    x, feature = torch.randn(16, 3, 6), torch.rand(16, 64)
    t = torch.full((16, 3), 42)
    mixed = t.clone()
    mixed[0, 0] = 41  # one point at another t: the per-point path
    with torch.no_grad():
        fast, slow = head(x, t, feature), head(x, mixed, feature)
    torch.testing.assert_close(fast[1:], slow[1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fast[0, 0], slow[0, 0])  # the other t did change its point


def test_diffmic_averages_the_softmax_readouts_of_its_chains(monkeypatch):
    """num_samples chains per image: chain k of image b is row k * B + b of the batched
    chain; the readout is the mean over k of softmax(y0)."""
    import methods.diffmic as diffmic_module

    cfg = METHODS.get("diffmic").make_config(
        {
            **TINY,
            "dcg_backbone": "resnet18",
            "dcg_small_stem": True,
            "roi_size": 7,
            "num_samples": 3,
        }
    )
    from bench.api.dataset import DatasetSpec

    spec = DatasetSpec("t", "multiclass", ("a", "b", "c"), 1, 28)
    method = diffmic_module.DiffMIC(cfg, spec)

    class Ctx:
        accelerator = type(
            "A", (), {"autocast": staticmethod(lambda: torch.autocast("cpu", enabled=False))}
        )()
        device = torch.device("cpu")

    method.build(Ctx)
    method.models.eval()
    chains = torch.arange(3 * 2 * 3, dtype=torch.float32).reshape(3 * 2, 3) / 7  # [S * B, C]
    monkeypatch.setattr(diffmic_module, "sample_prior_mean", lambda eps_fn, prior, sch, gen: chains)
    out = method.sample_scores(torch.rand(2, 1, 28, 28), torch.Generator())
    want = torch.softmax(chains, dim=1).reshape(3, 2, 3).mean(dim=0)
    torch.testing.assert_close(out, want)


def test_classification_suite_has_the_diffusion_classifiers_and_resnet18_as_reference():
    suite = load_suite("classification")
    names = [m.name for m in suite.methods]
    assert {"diffmic_v2", "diffmic", "card"} <= set(
        names
    ) and suite.reference == "resnet18"  # the headline: vs a ResNet-18
    for preset in suite.presets:  # smoke, standard, full
        for name in ("diffmic_v2", "diffmic", "card"):
            METHODS.get(name).make_config(
                suite.options_for(
                    next(m for m in suite.methods if m.name == name), suite.preset(preset)
                )
            )


@pytest.mark.slow
def test_card_and_diffmic_run_in_a_suite_with_extras_recorded(data_dir, tmp_path):
    """A real (tiny) run of both: records carry CARD's interval widths; DiffMIC trains its
    DCG jointly (its weights move away from the cached pretrained ones)."""
    from bench.engine.runner import run_suite

    suite = tmp_path / "s.yaml"
    suite.write_text(
        json.dumps(
            {
                "description": "tiny",
                "task": "classification",
                "datasets": ["breastmnist"],
                "seeds": [0],
                "reference": "card",
                "methods": [
                    {
                        "name": "card",
                        "options": {**TINY, "prior_epochs": 1, "num_samples": 4, "eval_samples": 2},
                    },
                    {
                        "name": "diffmic",
                        "options": {
                            **TINY,
                            "dcg_backbone": "resnet18",
                            "dcg_small_stem": True,
                            "roi_size": 7,
                            "dcg_pretrain_epochs": 1,
                            "num_samples": 2,
                        },
                    },
                ],
                "presets": {
                    "smoke": {
                        "budget": {
                            "epochs": 1,
                            "batch_size": 16,
                            "eval_batch_size": 256,
                            "max_steps": 2,
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
    card = json.loads(next((tmp_path / "results").rglob("card/*/seed0.json")).read_text())
    assert card["selection"]["prior"]["cache"] == "miss"
    assert (
        card["extras"]["test"]["piw"] >= 0 and 0.5 <= card["extras"]["test"]["vote_agreement"] <= 1
    )
    # the authors' temperature, tuned on the training set, and the vote readout beside the mean
    temperature = card["selection"]["temperature"]
    assert temperature["tuned"] and temperature["on"] == "train" and temperature["samples"] == 5
    # 35 batches of Adam at lr 0.01 from softplus(0): T within softplus(+-0.35)
    assert 0.53 < temperature["T"] < 0.88 and np.isfinite(temperature["nll"])
    assert temperature["optimiser"] == "Adam lr 0.01, 1 epoch(s), batch 16"
    assert 0 <= card["readouts"]["vote_share"]["test"]["accuracy"] <= 1
    with np.load(next((tmp_path / "results").rglob("card/*/seed0.npz"))) as npz:
        assert npz["test_piw"].shape == npz["test_labels"].shape
        assert set(np.unique(npz["test_vote"])) <= {0, 1}
        assert np.allclose(npz["test_vote_share"].sum(axis=1), 1)
        assert set(np.unique(npz["test_vote_share"] * 4)) <= {0, 1, 2, 3, 4}  # 4 samples
    diffmic = json.loads(next((tmp_path / "results").rglob("diffmic/*/seed0.json")).read_text())
    # the priors' own metrics and every model's share of predictions per class are recorded
    assert set(card["priors"]) == {"f_phi"} and set(diffmic["priors"]) == {
        "DCG global",
        "DCG local",
        "DCG fused",
    }
    for r in (card, diffmic):
        # calibrated after selection: a temperature fitted on val, ECE before and after
        cal = r["calibration"]
        assert cal["fitted_on"] == "val" and cal["temperature"] > 0
        assert r["metrics"]["test"]["ece_scaled"] == cal["ece"]["test"][1]
        assert cal["nll"]["val"][1] <= cal["nll"]["val"][0] + 1e-9  # fitted to lower val NLL
        assert cal["test_scaled"]["accuracy"] == pytest.approx(r["metrics"]["test"]["accuracy"])
        assert set(r["prior_calibration"]) == set(r["priors"])
        for prior in r["priors"].values():
            assert "ece_scaled" in prior["test"]
            assert 0 <= prior["test"]["auroc"] <= 1 and sum(
                prior["test"]["predicted_share"]
            ) == pytest.approx(1)
        assert (
            sum(r["predicted_share"]["test"]) == pytest.approx(1)
            and len(r["predicted_share"]["val"]) == 2
        )
    with np.load(next((tmp_path / "results").rglob("diffmic/*/seed0.npz"))) as npz:
        fused = npz["test_prior_DCG fused"]
    assert compute_all(npz_labels(tmp_path), fused.astype(np.float64), "binary")[
        "auroc"
    ] == pytest.approx(diffmic["priors"]["DCG fused"]["test"]["auroc"], abs=1e-6)
    md = write_leaderboard(str(suite), results_dir=tmp_path / "results", out_dir=tmp_path / "lb")[
        0
    ].read_text()
    table = md.split("| method | seeds |")[1]  # the metrics table (after the verdict's)
    # (two optimiser steps leave the models near chance: their rows may be flagged ⚠)
    rows = [
        line.split("|")[1].strip().split(" ⚠")[0]
        for line in table.splitlines()
        if line.startswith("| ")
    ]
    assert rows.index("card ▸ f_phi (its prior)") == rows.index("card (ref)") + 1
    assert rows.index("diffmic ▸ DCG fused (its prior)") > rows.index("diffmic")
    cached = torch.load(diffmic["selection"]["dcg_pretraining"]["file"], weights_only=False)[
        "state"
    ]
    trained = {
        k: v for k, v in cached.items() if k.endswith("weight") and v.dtype.is_floating_point
    }
    assert trained, "the DCG cache holds weights"
    # rerun: the pretrained priors come from the cache
    for p in (tmp_path / "results").rglob("*.json"):
        p.unlink()
    run_suite(
        str(suite), results_dir=tmp_path / "results", work_dir=tmp_path / "runs", progress=False
    )
    card2 = json.loads(next((tmp_path / "results").rglob("card/*/seed0.json")).read_text())
    assert card2["selection"]["prior"]["cache"] == "hit"
    assert card2["metrics"]["test"] == card["metrics"]["test"]


def npz_labels(tmp_path):
    with np.load(next((tmp_path / "results").rglob("diffmic/*/seed0.npz"))) as npz:
        return npz["test_labels"]

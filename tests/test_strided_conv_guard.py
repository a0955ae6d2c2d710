"""Strided convolutions on 1-pixel inputs compute in fp32 under CPU bf16 autocast
(bench/train/device.py): oneDNN's bf16 weight gradient for them reads uninitialised
memory on AVX-512 CPUs, which made DiffMIC-v2's perf case (16 px, a ResNet's last stage
on 1 x 1) fail with a NaN loss in about 3 % of runs."""

import copy

import torch

from bench.train.device import StridedConv2d, guard_strided_convs


def net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv2d(16, 16, 3, padding=1, bias=False),  # stride 1: left as it is
    )


def test_only_plain_strided_convs_are_guarded_and_copies_keep_their_own_weights():
    plain = net()
    guarded = guard_strided_convs(net())
    assert [type(m) for m in guarded] == [StridedConv2d, torch.nn.Conv2d]
    assert guarded.state_dict().keys() == plain.state_dict().keys()
    ema = copy.deepcopy(guarded)
    assert type(ema[0]) is StridedConv2d and ema[0].weight is not guarded[0].weight
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(guarded(x), plain(x))  # fp32 outside autocast: the same convolution


def test_a_one_pixel_input_runs_in_fp32_under_cpu_bf16_and_its_gradient_is_finite():
    conv = guard_strided_convs(net())[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 8, 4, 4)).dtype == torch.bfloat16  # the usual bf16
        assert conv(torch.randn(2, 8, 4, 1)).dtype == torch.float32
    for _ in range(20):  # unguarded: non-finite on most tries on an AVX-512 CPU
        junk = torch.full((1_000_000,), float("nan"))
        del junk  # freed memory full of NaN, as an earlier computation may leave it
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(torch.randn(8, 8, 1, 1))
        y.float().sum().backward()
        assert torch.isfinite(conv.weight.grad).all()
        # the padded taps never meet the input: their gradient is exactly 0
        assert (
            not conv.weight.grad[:, :, [0, 2]].any() and not conv.weight.grad[:, :, :, [0, 2]].any()
        )
        conv.weight.grad = None


def test_the_training_loop_guards_its_module(tmp_path):
    from bench.api.method import Budget, RunContext, TrainingProbe
    from bench.train.batches import Schedule
    from bench.train.device import make_accelerator
    from bench.train.training import Optimisation, train_loop

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.Flatten(), torch.nn.Linear(8, 2)
    )
    x, y = torch.randn(16, 3, 1, 1), torch.arange(16) % 2
    ctx = RunContext(
        make_accelerator("bf16", cpu=True)[0], 0, Budget(), tmp_path, progress=False,
        probe=TrainingProbe(steps=3),
    )  # fmt: skip

    def step(idx):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.cross_entropy(model(x[idx]).float(), y[idx])

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_loop(model, step, ctx, Schedule(16, 4, 1000, 1), Optimisation(opt), None, desc="g")
    assert type(model[0]) is StridedConv2d and torch.isfinite(model[0].weight).all()

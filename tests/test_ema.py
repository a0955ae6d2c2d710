"""The weight average of the diffusion models (bench/nn/ema.py): it follows the trained
weights with warm-up, is checkpointed with them, and stays out of the optimiser."""

import torch

from bench.nn.ema import with_ema


def test_the_average_follows_the_trained_weights_and_is_not_optimised():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    trained, averaged, update = with_ema(net, 0.9)
    assert set(trained.state_dict()) == {
        f"{k}.{p}" for k in ("trained", "ema") for p in ("weight", "bias")
    }
    opt = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=1.0)
    assert len(opt.param_groups[0]["params"]) == 2  # the network's, not the average's
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    update(1)  # warm-up: the average starts at the trained weights
    torch.testing.assert_close(averaged.weight, net.weight)
    before = net.weight.detach().clone()
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    update(1000)  # then moves a (1 - decay) part of the way to them
    moved = net.weight.detach()
    frac = ((averaged.weight - before) / (moved - before)).detach()
    assert torch.all(frac > 0.05) and torch.all(frac < 0.2)
    for _ in range(200):
        update(1000)  # the average converges to fixed weights
    torch.testing.assert_close(averaged.weight, moved)


def test_without_a_decay_the_network_is_used_as_it_is():
    net = torch.nn.Linear(3, 2)
    assert with_ema(net, None) == (net, net, None)

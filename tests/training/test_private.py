"""DP-SGD: Opacus's accountant against the papers' formulas, noise off against plain SGD, and
the BatchNorm replacements."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.training.private import dp_fit, epsilon_spent

pytest.importorskip("opacus")


def rdp_sampled_gaussian(q: float, sigma: float, orders: Sequence[int]) -> np.ndarray:
    """RDP of one step of the Poisson-subsampled Gaussian mechanism at integer orders α ≥ 2
    (Mironov, Talwar and Zhang 2019, Sec. 3.3): ``log(A_α) / (α - 1)`` with
    ``A_α = Σ_k C(α, k) (1-q)^(α-k) q^k exp((k² - k) / (2σ²))``, summed in log space."""
    out = []
    for alpha in orders:
        if q == 1.0:
            out.append(alpha / (2 * sigma ** 2))
            continue
        terms = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
                 + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma ** 2)
                 for k in range(alpha + 1)]
        top = max(terms)
        out.append((top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1))
    return np.asarray(out)


def epsilon_from_rdp(rdp: Sequence[float], orders: Sequence[float], delta: float
                     ) -> tuple[float, float]:
    """(ε, the order that gives it) of an RDP curve at ``delta``: Balle et al. (2020), Thm. 21,
    ``ε = rdp_α + log((α-1)/α) - (log δ + log α) / (α - 1)``, minimised over α."""
    rdp, a = np.asarray(rdp, dtype=float), np.asarray(orders, dtype=float)
    eps = rdp - (np.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    i = int(np.nanargmin(eps))
    return float(max(eps[i], 0.0)), float(a[i])


@pytest.mark.parametrize("q,sigma", [(0.01, 1.1), (0.2, 0.8), (1.0, 2.0)])
def test_opacus_rdp_equals_the_subsampled_gaussian_formula(q: float, sigma: float) -> None:
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = list(range(2, 64))
    steps = 250
    ours = steps * rdp_sampled_gaussian(q, sigma, orders)
    np.testing.assert_allclose(compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                                           orders=orders), ours, rtol=1e-9)


def test_epsilon_is_balle_et_al_conversion_of_opacus_rdp_and_behaves() -> None:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = RDPAccountant.DEFAULT_ALPHAS
    q, sigma, steps, delta = 256 / 60000, 1.1, 60 * 60000 // 256, 1e-5  # Abadi et al.'s MNIST
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    eps, order = epsilon_from_rdp(rdp, orders, delta)
    assert epsilon_spent(q, sigma, steps, delta) == pytest.approx(eps, rel=1e-12)
    assert 1.0 < eps < 3.0 and order > 1  # the paper's setting is a single-digit ε
    assert epsilon_spent(q, 2 * sigma, steps, delta) < eps < epsilon_spent(q, sigma, 2 * steps,
                                                                           delta)


class _Net(nn.Module):
    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Conv2d(1, 4, 3), *([nn.BatchNorm2d(4)] if batchnorm else []),
                  nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _data(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_no_noise_and_no_clipping_is_plain_sgd_on_the_same_poisson_batches() -> None:
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    x, y = _data()
    batch, lr, seed, epochs = 10, 0.1, 3, 2
    private, info = dp_fit(_Net(), (x, y), epochs=epochs, batch_size=batch, lr=lr,
                           max_grad_norm=1e9, delta=1e-5, noise_multiplier=0.0, seed=seed)
    assert info["epsilon"] == math.inf  # no noise: no privacy

    plain = _Net()
    for m in plain.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    opt = torch.optim.SGD(plain.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)  # the loader's generator: Opacus samples from it
    sampler = UniformWithReplacementSampler(num_samples=len(x),
                                            sample_rate=info["sample_rate"], generator=g)
    expected = int(len(x) * info["sample_rate"])  # Opacus averages over the expected size
    for _ in range(epochs):
        torch.empty((), dtype=torch.int64).random_(generator=g)  # each epoch's iterator draws
        for idx in sampler:  # its base seed first (torch DataLoader), then the batches
            opt.zero_grad()
            if len(idx):
                loss = nn.functional.cross_entropy(plain(x[idx]), y[idx], reduction="sum")
                (loss / expected).backward()
            else:
                for p in plain.parameters():
                    p.grad = torch.zeros_like(p)
            opt.step()
    for a, b in zip(private.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_target_epsilon_is_reached_and_runs_repeat_bit_for_bit() -> None:
    x, y = _data()
    runs = [dp_fit(_Net(batchnorm=True), (x, y), epochs=2, batch_size=10, lr=0.1,
                   max_grad_norm=1.0, delta=1 / len(x), target_epsilon=4.0, seed=0)
            for _ in range(2)]
    (a, info), (b, _) = runs
    assert info["epsilon"] == pytest.approx(4.0, abs=0.05) and info["epsilon"] <= 4.0 + 1e-6
    assert info["noise_multiplier"] > 0 and info["batchnorm"] == "freeze"
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    bn = a.body[1]
    assert not bn.training and not bn.weight.requires_grad  # frozen: the source's statistics
    assert torch.equal(bn.running_mean, torch.zeros(4))  # never updated


def test_groupnorm_replaces_batchnorm_and_a_bad_choice_is_named() -> None:
    x, y = _data()
    net, info = dp_fit(_Net(batchnorm=True), (x, y), epochs=1, batch_size=10, lr=0.1,
                       max_grad_norm=1.0, delta=1e-3, noise_multiplier=1.0, seed=0,
                       batchnorm="groupnorm")
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert 0 < info["epsilon"] < math.inf
    with pytest.raises(ValueError, match="batchnorm: 'layer'; choose freeze or groupnorm"):
        dp_fit(_Net(), (x, y), epochs=1, batch_size=10, lr=0.1, max_grad_norm=1.0, delta=1e-3,
               noise_multiplier=1.0, batchnorm="layer")
    with pytest.raises(ValueError, match="exactly one of noise_multiplier and target_epsilon"):
        dp_fit(_Net(), (x, y), epochs=1, batch_size=10, lr=0.1, max_grad_norm=1.0, delta=1e-3)

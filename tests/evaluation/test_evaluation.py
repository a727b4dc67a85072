"""transferlab.evaluation.evaluate: checkpoints that share a backbone share its features, bit for
bit."""

from __future__ import annotations

import numpy as np
import torch

from transferlab.evaluation.evaluate import _SharedBackbones
from transferlab.models.nets import build_model
from transferlab.training.loop import predict_proba


def test_shared_backbones_give_the_same_bits_as_the_whole_model() -> None:
    cpu = torch.device("cpu")
    x = torch.randn(300, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    a = build_model("small_cnn", 10, 0.5, 0.3, seed=0, width=8)
    b = build_model("small_cnn", 10, 0.5, 0.3, seed=0, width=8)
    with torch.no_grad():
        b.head.weight.mul_(2.0)  # another head on the same backbone (a linear probe's)
    c = build_model("small_cnn", 10, 0.5, 0.3, seed=1, width=8)  # another backbone
    shared = _SharedBackbones(cpu)
    for model in (a, b, c):
        assert np.array_equal(shared.proba(model, "test", x), predict_proba(model, x, cpu))
    assert len(shared.features) == 2  # a and b: one backbone pass
    assert shared.key(a) == shared.key(b) != shared.key(c)
    # a normalisation is part of the backbone: other statistics, another key
    d = build_model("small_cnn", 10, 0.4, 0.3, seed=0, width=8)
    assert shared.key(d) != shared.key(a)
    assert np.array_equal(shared.proba(d, "test", x), predict_proba(d, x, cpu))
    # more than one batch: the whole model runs (the head would see other matrices)
    big = torch.randn(1100, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(shared.proba(a, "big", big), predict_proba(a, big, cpu))
    assert ("big" not in {name for _, name in shared.features})

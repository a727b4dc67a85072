"""``bss``: fine-tuning with Batch Spectral Shrinkage of the backbone features.

Chen, Wang, Fu, Long, Wang (2019), "Catastrophic Forgetting Meets Negative Transfer: Batch
Spectral Shrinkage for Safe Transfer Learning" (NeurIPS). Implemented: the paper's penalty

    L_bss(F) = eta * sum_{i=1..k} sigma_{-i}(F)^2,

the k smallest squared singular values of each training batch's feature matrix F (B, D) (the
pooled backbone features the head reads), added to the mean cross-entropy, as TLlib's
``BatchSpectralShrinkage``. The paper adds it on top of a fine-tuning regulariser (L2, L2-SP
or DELTA); here it is added to plain fine-tuning with weight decay. Where a batch has fewer
than k singular values (min(B, D) < k), all of them count. Otherwise it trains exactly as
``finetune``; ``eta = 0`` gives bitwise the ``finetune`` model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.adapt.strategies.base import LossTerm
from transferlab.adapt.strategies.finetune import Finetune, FinetuneParams
from transferlab.adapt.strategies.registry import register
from transferlab.config.typed import check_range
from transferlab.models.nets import TransferNet


@dataclass(frozen=True)
class BSSParams(FinetuneParams):
    eta: float = 0.001  # strength of the shrinkage of the smallest squared singular values
    k: int = 1  # how many of the smallest singular values of each batch's features shrink

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.eta", self.eta, 0, 1e4)
        check_range(f"{key}.k", self.k, 1, 65_536)


def spectral_shrinkage(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the ``k`` smallest squared singular values of ``features`` (B, D), in float32.

    ``torch.linalg.svdvals`` (unlike ``svd``) has numerically stable gradients, also where
    singular values repeat (e.g. two identical examples in a batch).
    """
    sigma = torch.linalg.svdvals(features.float())  # (min(B, D),) in descending order
    return sigma[-k:].pow(2).sum()


@register
class BSS(Finetune):
    name = "bss"
    Params = BSSParams
    roles = frozenset()
    style = ("-.", "1")
    rank = 42

    def loss_term(self, model: TransferNet, cfg: BSSParams) -> LossTerm:
        def term(features: torch.Tensor, logits: torch.Tensor, inputs: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
            return cfg.eta * spectral_shrinkage(features, cfg.k)

        return term

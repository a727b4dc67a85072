"""Networks and the surgery transfer needs, in the spirit of timm.

Every model is a :class:`TransferNet`: ``normalize`` (fixed data statistics) -> ``backbone``
(an ``nn.Sequential`` of named blocks ending in a pooled feature vector) -> ``head``
(``nn.Linear``, or an :class:`MLPHead`). Surgery is explicit: :func:`reset_head` swaps the head
for N classes, :func:`freeze` freezes blocks by name, with or without their BatchNorm statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.models import backbones
from transferlab.models.backbones.small_cnn import MaxPool2d  # noqa: F401 (re-exported)
from transferlab.models.backbones.torchvision import torchvision_backbone

HEADS = ("linear", "mlp")


class Normalize(nn.Module):
    """(x - mean) / std on (B, 1, H, W) inputs in [0, 1]; repeats to 3 channels if asked."""

    def __init__(self, mean: float, std: float, channels: int = 1) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.expand(-1, self.channels, -1, -1) if self.channels != 1 else x


class TargetScaled(nn.Module):
    """A regression model that predicts in target units: the wrapped model's z-score (N, 1)
    times the budget's target deviation plus its mean (:mod:`transferlab.core.tasks`). Used where a
    model leaves the pipeline (the registered champion), so it needs no config beside it."""

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("target_mean", torch.tensor(float(mean)))
        self.register_buffer("target_std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.target_std + self.target_mean


def in_target_units(model: nn.Module, config: dict[str, Any]) -> nn.Module:
    """``model`` as it should leave the pipeline: a regression checkpoint (its config has
    ``target_mean`` and ``target_std``) wrapped in :class:`TargetScaled`; others unchanged."""
    if "target_std" not in config:
        return model
    return TargetScaled(model, config["target_mean"], config["target_std"]).eval()


class Passthrough(nn.Module):
    """The ``normalize`` slot of a text model: token ids pass unchanged. ``mean`` 0 and ``std``
    1 are kept only so every checkpoint records the same fields."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("std", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TransferNet(nn.Module):
    """normalize -> backbone blocks -> head, with BatchNorm statistics freezable.

    ``arch_config`` holds what a checkpoint needs beyond the architecture name to rebuild the
    backbone (a text model's Hugging Face config and pooling); empty for image models.
    """

    def __init__(self, normalize: nn.Module, backbone: nn.Module, feature_dim: int,
                 num_classes: int, arch_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)
        self.frozen_bn: tuple[str, ...] = ()
        self.arch_config = dict(arch_config or {})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images or (B, 2, L) token ids and mask -> (B, feature_dim)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) or (B, 2, L) -> (B, num_classes) logits."""
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        for name in self.frozen_bn:  # frozen BatchNorm keeps its running statistics
            self.get_submodule(name).eval()
        return self


def build_model(arch: str, num_classes: int, mean: float, std: float, seed: int,
                width: int = 32, arch_config: dict[str, Any] | None = None,
                pooling: str | None = None, model_config: dict[str, Any] | None = None,
                key: str = "model_config") -> TransferNet:
    """Build a randomly initialised network, the initialisation drawn from ``seed`` alone.

    Args:
        arch: ``small_cnn``, a torchvision classification architecture name, or
            ``hf:<checkpoint directory or package>`` (a text encoder,
            :mod:`transferlab.models.text`).
        num_classes: outputs of the head (at least 1).
        mean, std: normalisation statistics of the data the model is trained on (ignored by
            text models, whose token ids pass unchanged).
        seed: initialisation seed (global RNG state is left untouched).
        width: small_cnn channels of the first block.
        arch_config: an ``hf:`` model's {"hf_config", "pooling"} as a checkpoint recorded it;
            None reads them from the checkpoint directory the arch names.
        pooling: ``pretrain.pooling``, the pooled feature of a backbone that offers a choice
            (an ``llm:`` model: ``last`` or ``mean``); None: its default. Ignored with
            ``arch_config``, which records it.
        model_config: keys of the model config to change (an ``hf:`` or ``llm:`` model's
            ``hf_config``: a smaller model of the same family, as scratch's ``model_config``);
            the checkpoint records the changed config. A ParamsError names ``key``.
    Returns:
        The :class:`TransferNet`.
    """
    backbone = backbones.get(arch)
    arch_config = backbone.arch_config(arch, arch_config, pooling)  # before the seeded build
    if model_config:
        arch_config = backbone.resize(key, arch, arch_config, model_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built = backbone.build(arch, width, arch_config)
        normalize = Passthrough() if built.channels is None else Normalize(mean, std,
                                                                            built.channels)
        return TransferNet(normalize, built.blocks, built.dim, max(num_classes, 1),
                           built.arch_config)


def load_init(model: TransferNet, init: str) -> list[str]:
    """Load pretrained weights into the backbone: ``torchvision:<arch>:<weights>`` (see
    :func:`load_torchvision_init`), ``hf:<checkpoint directory or package>`` or ``llm:<...>``
    (a causal LM, :mod:`transferlab.models.causal_lm`). Returns the names of the loaded
    backbone entries."""
    if init.startswith("hf:"):
        from transferlab.models.text import load_pretrained

        return load_pretrained(model.backbone, init)
    if init.startswith("llm:"):
        from transferlab.models import causal_lm

        loaded = causal_lm.load_pretrained(model.backbone, init)
        # a checkpoint of a model whose LM still holds these weights saves only the record
        model.arch_config["weights"] = {"init": init,
                                        "sha256": causal_lm.weights_digest(model.backbone)}
        return loaded
    return load_torchvision_init(model, init)


def load_torchvision_init(model: TransferNet, init: str) -> list[str]:
    """Load ``torchvision:<arch>:<weights>`` into the backbone of ``model``.

    ``<weights>`` is either a weights enum name of that architecture (e.g. ``IMAGENET1K_V1``,
    fetched through torchvision's cache under ``$TORCH_HOME``; downloads if not cached) or the
    path of a local state-dict file. The classifier is dropped: the head stays new.

    Returns:
        The names of the backbone entries that were loaded.
    """
    import torchvision

    _, arch, weights = init.split(":", 2)
    enum = torchvision.models.get_model_weights(arch)
    names = [w.name for w in enum]
    if weights in names:  # a weights name wins over a same-named file in the working directory
        state = enum[weights].get_state_dict(progress=True)
    elif Path(weights).is_file():
        state = torch.load(weights, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"pretrain.init: unknown weights {weights!r} for {arch} and no such "
                         f"file; expected a path or one of {', '.join(names)}")
    # Our backbone wraps the very module objects of a torchvision model, so loading the full
    # torchvision state dict (strict: the file must match `arch`) fills the backbone too.
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not touch global RNG
        backbone, _, net = torchvision_backbone(arch)
    net.load_state_dict(state)
    model.backbone.load_state_dict(backbone.state_dict())
    return list(backbone.state_dict())


class MLPHead(nn.Sequential):
    """Linear -> ReLU -> Linear. No dropout, so train and eval mode compute the same function."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.hidden = hidden


def make_head(kind: str, in_dim: int, num_classes: int, hidden: int, seed: int) -> nn.Module:
    """A new classification head, initialised from ``seed`` alone (global RNG left untouched).

    Args:
        kind: one of :data:`HEADS`. ``linear`` is the ``nn.Linear`` drawn right after
            ``torch.manual_seed(seed)``, exactly as heads always were.
        in_dim: feature dimension (the backbone's ``feature_dim``).
        num_classes: outputs.
        hidden: width of the ``mlp`` hidden layer (at least 1); ignored by ``linear``.
        seed: initialisation seed.
    Returns:
        An ``nn.Linear`` or an :class:`MLPHead`: (B, in_dim) -> (B, num_classes).
    """
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; expected one of {', '.join(HEADS)}")
    if kind == "mlp" and hidden < 1:
        raise ValueError(f"head_hidden must be at least 1 for an mlp head, got {hidden}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "linear":
            return nn.Linear(in_dim, num_classes)
        return MLPHead(in_dim, hidden, num_classes)


def head_config(head: nn.Module) -> dict[str, Any]:
    """What a checkpoint's config records about ``head``: nothing for a linear head."""
    if isinstance(head, MLPHead):
        return {"head": "mlp", "head_hidden": head.hidden}
    return {}


def reset_head(model: TransferNet, num_classes: int, seed: int, kind: str = "linear",
               hidden: int = 0) -> TransferNet:
    """Replace the head with a new one for ``num_classes`` (see :func:`make_head`)."""
    model.head = make_head(kind, model.feature_dim, num_classes, hidden, seed)
    return model


def block_names(model: TransferNet) -> list[str]:
    """Names of the backbone blocks that hold parameters, in forward order."""
    return [name for name, m in model.backbone.named_children()
            if any(True for _ in m.parameters())]


def freeze(model: TransferNet, blocks: list[str], bn_stats: bool = True) -> list[str]:
    """Freeze backbone blocks by name.

    Args:
        model: the network.
        blocks: names from :func:`block_names`.
        bn_stats: also keep BatchNorm running statistics fixed in those blocks.
    Returns:
        The names of the frozen parameters.
    """
    valid = block_names(model)
    frozen = []
    bn = []
    for block in blocks:
        if block not in valid:
            raise ValueError(f"unknown block {block!r}; expected one of {', '.join(valid)}")
        for name, p in model.backbone.get_submodule(block).named_parameters():
            p.requires_grad_(False)
            frozen.append(f"backbone.{block}.{name}")
        if bn_stats:
            bn += [f"backbone.{block}.{n}" for n, m in
                   model.backbone.get_submodule(block).named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.frozen_bn = tuple(dict.fromkeys(model.frozen_bn + tuple(bn)))  # freeze() accumulates
    model.train(model.training)
    return frozen


# what a backbone offers that some strategies need, with the words a skip reason uses
TRAITS = {"batchnorm": "BatchNorm layers (running statistics to recalibrate)",
          "channel_maps": "channel feature maps (B, C, H, W) in its blocks",
          "next_token": "language-model head (next-token logits) to prompt"}


def backbone_traits(config: dict[str, Any] | None) -> frozenset[str]:
    """The :data:`TRAITS` of the backbone a checkpoint config describes: every image arch has
    BatchNorm and channel maps; a text encoder (``hf:``) has neither; a causal LM (``llm:``)
    has next-token logits."""
    if not config:
        return frozenset()
    backbone = backbones.find(str(config.get("arch", "")))
    return frozenset(TRAITS) if backbone is None else frozenset(backbone.traits)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_checkpoint(model: TransferNet, path: str | Path, config: dict[str, Any]) -> None:
    """Save the state dict with what :func:`load_checkpoint` needs to rebuild the model.

    A causal LM that still holds the weights it was loaded with (``arch_config["weights"]``,
    e.g. a prompted model, which trains nothing) is not saved: the checkpoint records its init
    and sha256, and :func:`load_checkpoint` loads them again
    (:func:`~transferlab.models.causal_lm.slim_state`).

    The saved config's ``head``/``head_hidden`` keys describe ``model.head`` (they are set for
    an MLP head and dropped for a linear one), so a linear-head config is saved as given.
    """
    # "weights" (where a causal LM's weights come from) is the model's own to say, never copied
    config = {k: v for k, v in config.items() if k not in ("head", "head_hidden", "weights")}
    config.update(head_config(model.head))
    config.update(model.arch_config)  # empty for image models
    state = model.state_dict()
    if "weights" in config:  # a causal LM loaded from llm:<...>
        from transferlab.models import causal_lm

        state, config["weights"] = causal_lm.slim_state(model, config["weights"])
        if config["weights"] is None:
            del config["weights"]
    torch.save({"config": config, "state_dict": state}, path)


# the keys of a checkpoint's config that a backbone's arch_config wrote (hf: and llm: models)
ARCH_CONFIG = ("hf_config", "pooling", "origin", "prompt", "weights")


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The config a checkpoint was saved with, without building its model (the file is
    memory-mapped: its tensors are not read)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[TransferNet, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_checkpoint`. Returns (model in eval mode, config)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    cfg = ckpt["config"]
    arch_config = ({k: cfg[k] for k in ARCH_CONFIG if k in cfg} if "hf_config" in cfg
                   else None)
    model = build_model(cfg["arch"], cfg["num_classes"], cfg["mean"], cfg["std"], seed=0,
                        width=cfg.get("width", 32), arch_config=arch_config)
    if "head" in cfg:  # only non-linear heads are recorded
        reset_head(model, max(cfg["num_classes"], 1), seed=0, kind=cfg["head"],
                   hidden=cfg.get("head_hidden", 0))
    if "weights" in cfg:  # the LM's weights are rebuilt from their init (see save_checkpoint)
        from transferlab.models import causal_lm

        causal_lm.restore_state(model, ckpt["state_dict"], cfg["weights"], str(path))
    else:
        model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg

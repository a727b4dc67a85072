"""``params.yaml`` typed all the way: the dataset blocks by their kinds
(:mod:`transferlab.data.kinds`) and ``pretrain.arch`` by the backbone registry
(:mod:`transferlab.models.backbones`), with the checks that need both (an ``hf:`` encoder reads
text, an image backbone images).

:func:`transferlab.config.params.load_params` checks what the config layer knows (the keys every
kind shares, every other block); :func:`load_params` here adds the registries' checks. Stages
load params with this one; stages that run strategies then call
:func:`transferlab.adapt.strategies.resolve` on its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.config import params as config_params
from transferlab.config.params import check_init, source_arch
from transferlab.config.typed import fail
from transferlab.data import kinds
from transferlab.models import backbones


def resolve(params: Any) -> Any:
    """``params`` (from :func:`transferlab.config.params.load_params`) with its datasets typed
    by their kinds and its architecture checked against the backbones. Idempotent.

    Raises:
        ParamsError: naming the offending key and the registered choices.
    """
    params = kinds.resolve(params)
    arch = params.pretrain.arch
    backbone = backbones.check("pretrain.arch", arch)
    modality = params.prepare.target.modality
    if backbone.modality != modality:
        fail("pretrain.arch", f"{arch!r} does not fit {modality} data; it reads "
             f"{backbone.modality}; {modality} data needs one of "
             + ", ".join(backbones.names(modality)))
    pooling = params.pretrain.pooling
    if pooling is not None and not backbone.poolings:
        fail("pretrain.pooling", f"{arch!r} pools its own way; pretrain.pooling must be null "
             f"for it, got {pooling!r}")
    if pooling is not None and pooling not in backbone.poolings:
        fail("pretrain.pooling", f"unknown pooling {pooling!r} for {arch!r}; expected one of "
             + ", ".join(backbone.poolings))
    text = modality == "text"
    for name, spec in params.prepare.sources.items():
        if spec.init is None:
            continue
        key = f"prepare.sources.{name}.init"
        own = source_arch(arch, spec.init, text)
        if own == arch:
            check_init(key, spec.init, arch)
        elif backbones.check(key, own).modality != "text":  # a text model of its own
            fail(key, f"{own!r} does not read text")
    if text and params.pretrain.augment not in (False, "none"):
        fail("pretrain.augment", f"{params.pretrain.augment!r} augments images; text needs false")
    if text and params.pretrain.arch != params.prepare.tokenizer:
        fail("prepare.tokenizer", f"{params.prepare.tokenizer!r} differs from pretrain.arch "
             f"{params.pretrain.arch!r}; the model reads the token ids of its own tokenizer")
    return params


def load_params(path: str | Path = "params.yaml") -> Any:
    """Read, validate and resolve the whole ``params.yaml``
    (:func:`transferlab.config.params.load_params`, then :func:`resolve`)."""
    return resolve(config_params.load_params(path))

"""Pretraining a candidate source model on its prepared source dataset."""

from __future__ import annotations

import torch

from transferlab.config.params import PretrainParams, source_arch
from transferlab.core.metrics import classification_metrics
from transferlab.data.store import PreparedDataset
from transferlab.models import backbones
from transferlab.models.nets import (
    TransferNet,
    build_model,
    count_trainable,
    load_init,
)
from transferlab.training.distributed import SINGLE, World, sync_buffers
from transferlab.training.loop import Stopwatch, fit, predict_proba


def model_config(arch: str, p: PretrainParams, num_classes: int, norm: dict,
                 extra: dict) -> dict:
    """What :func:`~transferlab.models.nets.load_checkpoint` needs to rebuild a model."""
    return {"arch": arch, "width": p.width, "num_classes": num_classes,
            "mean": norm["mean"], "std": norm["std"], **extra}


def pretrain_source(p: PretrainParams, data: PreparedDataset, device: torch.device,
                    name: str, init: str | None = None,
                    world: World = SINGLE) -> tuple[TransferNet, dict, dict, dict]:
    """Pretrain (or, for a source without data, only initialise) one source model.

    Args:
        p: the ``pretrain`` block.
        data: the source's prepared dataset.
        device: where to train.
        name: the source name, for the progress bar.
        init: the source's own initial weights (its ``init`` key), overriding ``p.init``; on
            text, an ``hf:`` or ``llm:`` init is also the model's architecture
            (:func:`~transferlab.config.params.source_arch`), ``pretrain.pooling`` applying
            where that architecture offers a choice.
        world: this process's rank when several processes train the run (DDP,
            ``execution.ddp_procs``); every rank returns the same model.
    Returns:
        (model on CPU, checkpoint config, metrics: source test metrics and training summary,
        timing: wall time, peak memory and per-epoch history). The null source reports
        ``trained: false`` and no test metrics.
    """
    norm = data.modality.normalization(data.manifest)
    classes = data.class_names
    arch = source_arch(p.arch, init, data.modality.name == "text")  # the source's own init
    init = init or p.init
    pooling = p.pooling if backbones.get(arch).poolings else None
    model = build_model(arch, len(classes), norm["mean"], norm["std"], p.seed, p.width,
                        pooling=pooling)
    config = model_config(arch, p, max(len(classes), 1), norm,
                          {"source_classes": list(classes), "init": init})
    if init != "random":
        load_init(model, init)
    if not data.has_data:
        return model.cpu().eval(), config, {"trained": False, "num_classes": 0}, {}
    (x_train, y_train), val, (x_test, y_test) = (data.inputs(s) for s in ("train", "val", "test"))
    generator = torch.Generator().manual_seed(p.seed)
    with Stopwatch() as watch:
        summary = fit(model, (x_train, y_train), val, p,
                      [{"params": [q for q in model.parameters() if q.requires_grad]}],
                      generator, device, desc=f"pretrain {name}", world=world)
        sync_buffers(model, world)  # the best epoch's statistics are rank 0's everywhere
    with Stopwatch() as infer:
        proba = predict_proba(model, x_test, device)
    metrics = {
        "trained": True,
        "num_classes": len(classes),
        "trainable_params": count_trainable(model),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "test": classification_metrics(y_test.numpy(), proba),
    }
    timing = {"seconds": watch.seconds, "peak_bytes": watch.peak_bytes,
              "peak_added_bytes": watch.peak_added_bytes, "history": summary["history"],
              # throughput: training examples per second (epochs x training examples over the
              # fit's wall time, its per-epoch validation passes included), test inference
              "train_examples_per_second": summary["epochs_run"] * len(x_train) / watch.seconds,
              "inference_examples_per_second": len(x_test) / max(infer.seconds, 1e-9)}
    return model.cpu().eval(), config, metrics, timing

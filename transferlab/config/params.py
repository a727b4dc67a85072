"""Typed, frozen views of ``params.yaml``: one dataclass per block, validated at load time.

Every block rejects unknown keys and wrong types and names the valid choices in its error, e.g.
``transfer.fintune: unknown key; expected one of finetune, linear_probe, ...``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transferlab.config.typed import (  # to_dict: re-exported for the stages
    check_range,
    fail,
    from_dict,
    read_yaml_mapping,
    to_dict,  # noqa: F401
)

BIG = 10**7  # upper bound for counts: catches typos like 4e9 before they eat the machine


@dataclass(frozen=True)
class CommonParams:
    seeds: tuple[int, ...] = (0, 1, 2)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    num_threads: int = 2
    # MKL's reproducible GEMM branch: compatible (the same on any x86-64) | avx2 (the same on
    # CPUs with AVX2; 2.8x faster GEMMs, 1.8x faster MiniLM training: benchmarks/text_speed.py)
    gemm_branch: Literal["compatible", "avx2"] = "compatible"
    # portable: the same bits on any x86-64 CPU (oneDNN off: convolutions by ATen + MKL GEMM) |
    # fast: oneDNN's convolutions, bits that hold on one machine (benchmarks/determinism_cost.py)
    determinism: Literal["portable", "fast"] = "portable"

    def validate(self, key: str) -> None:
        if not self.seeds:
            fail(f"{key}.seeds", "must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            fail(f"{key}.seeds", f"seeds must be distinct, got {list(self.seeds)}")
        for i, s in enumerate(self.seeds):
            check_range(f"{key}.seeds[{i}]", s, 0, 2**31 - 1)
        check_range(f"{key}.num_threads", self.num_threads, 1, 256)
        if self.determinism == "portable" and self.gemm_branch != "compatible":
            fail(f"{key}.gemm_branch", f"{self.gemm_branch!r} gives other bits on other CPUs "
                 "(MKL offers it on Intel only), so it cannot be portable; set "
                 f"{key}.gemm_branch: compatible, or {key}.determinism: fast")


@dataclass(frozen=True)
class TrackingParams:
    enabled: bool = True
    experiment: str = "transferlab"
    log_models: bool = True
    on_unreachable: Literal["error", "warn"] = "error"
    # false: each stage journals its runs and the `mirror` stage writes them all at the end of
    # `dvc repro` (one MLflow start-up, not one per stage); true: each stage writes as it runs
    live: bool = False


@dataclass(frozen=True)
class ExecutionParams:
    """Where the work runs: a transfer stage's replicates (:mod:`transferlab.execution`; no
    stage depends on these keys, both backends write the same bytes) and the processes of one
    pretrain run (``ddp_procs``, :mod:`transferlab.training.distributed`; a pretrain dependency)."""

    backend: Literal["local", "ray"] = "local"
    # ray: a running cluster's GCS "host:port", "auto" (the cluster `ray start` started on this
    # machine), or null (start a private one-machine Ray instance for the stage)
    address: str | None = None
    num_cpus: float | None = None  # per task; null: common.num_threads
    num_gpus: float = 0.0  # per task; fractions share a GPU (0.25: four tasks on one)
    max_retries: int = 3  # reruns of a task whose worker process or node died
    # processes that train one pretrain run together (PyTorch DDP; 1: no DDP). Unlike the keys
    # above, it changes the bytes (each process sees a shard of every batch), so the pretrain
    # stages depend on it
    ddp_procs: int = 1

    def validate(self, key: str) -> None:
        if self.backend == "local" and self.address is not None:
            fail(f"{key}.address", "applies to backend ray only; set execution.backend: ray "
                 "or remove the address")
        if self.num_cpus is not None:
            check_range(f"{key}.num_cpus", self.num_cpus, 0.0, 1024.0, low_open=True)
        check_range(f"{key}.num_gpus", self.num_gpus, 0.0, 64.0)
        check_range(f"{key}.max_retries", self.max_retries, 0, 100)
        check_range(f"{key}.ddp_procs", self.ddp_procs, 1, 64)


@dataclass(frozen=True)
class DatasetCommon:
    """The keys every dataset kind takes; the others are the kind's own."""

    kind: str  # a registered kind (transferlab.data.kinds)
    init: str | None = None  # a source's own weights, overriding pretrain.init (any kind)
    task: Literal["classification", "regression"] | None = None  # target only (core.tasks)
    strata: int | None = None  # regression: quantile bins standing in for classes (default 4)

    def validate(self, key: str) -> None:
        if self.init is not None:
            check_init(f"{key}.init", self.init)


class DatasetBlock(dict):
    """One dataset block as ``params.yaml`` writes it (``{kind: fonts, chars: ..., ...}``), its
    shared keys typed (:class:`DatasetCommon`). The kind's own keys are typed and checked against
    the dataset-kind registry by :func:`transferlab.data.kinds.resolve`, which turns each block
    into its kind's spec; until then a block is a read-only mapping."""

    @classmethod
    def parse(cls, data: Any, key: str) -> DatasetBlock:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            fail(key, f"expected a mapping, got {type(data).__name__} {data!r}")
        if "kind" not in data:
            fail(f"{key}.kind", "missing required key")
        shared = [f.name for f in dataclasses.fields(DatasetCommon) if f.name in data]
        typed = from_dict(DatasetCommon, {k: data[k] for k in shared}, key)
        return cls({str(k): v for k, v in data.items()}, **{k: getattr(typed, k) for k in shared})

    def __init__(self, data: dict, **typed: Any) -> None:
        super().__init__(data)
        super().update(typed)

    def __reduce__(self) -> tuple:
        return DatasetBlock, (dict(self),)

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a dataset block is read-only")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _read_only

    kind = property(lambda self: self["kind"])
    init = property(lambda self: self.get("init"))
    task = property(lambda self: self.get("task"))
    strata = property(lambda self: self.get("strata"))

    def flat(self) -> dict[str, Any]:
        return dict(self)


def _typed_dataset(data: Any, key: str) -> Any:
    """A dataset block of ``prepare``: a kind's typed spec (already resolved) passes through."""
    return data if hasattr(data, "kind_info") else DatasetBlock.parse(data, key)


Budget = int | Literal["all"]


def budget_order(budget: str) -> tuple[int, float]:
    """Sort key of a budget's name: labels per class in numeric order, then "all"."""
    try:
        return (0, float(budget))
    except ValueError:  # "all"
        return (1, 0.0)


@dataclass(frozen=True)
class PrepareParams:
    # each dataset block: a DatasetBlock here, its kind's own spec once resolved by
    # transferlab.data.kinds.resolve (as transfer's blocks are by strategies.resolve)
    target: Any
    sources: dict[str, Any]
    image_size: int = 16
    seed: int = 0
    budgets: tuple[Budget, ...] = (1, 3, 10, 30, "all")
    # budget -> seeds run at it (at least common.seeds'; the extra ones continue after the
    # largest common seed): more seeds where runs are cheap, for power (docs/statistics.md)
    seeds_per_budget: dict[str, int] = field(default_factory=dict)
    test_per_class: int = 50
    val_per_class: int = 10
    source_test_fraction: float = 0.2
    source_val_fraction: float = 0.1
    tokenizer: str | None = None  # text: hf:<...> or llm:<...>, as pretrain.arch; used by prepare
    max_length: int = 64  # text: tokens per example after truncation ([CLS] and [SEP] included)

    def validate(self, key: str) -> None:
        object.__setattr__(self, "target", _typed_dataset(self.target, f"{key}.target"))
        object.__setattr__(self, "sources", {
            name: _typed_dataset(spec, f"{key}.sources.{name}")
            for name, spec in self.sources.items()})
        if self.tokenizer is not None and not self.tokenizer.startswith("llm:"):
            check_hf(f"{key}.tokenizer", self.tokenizer)
        if self.tokenizer is not None and self.tokenizer == "llm:":
            fail(f"{key}.tokenizer", "expected llm:<checkpoint directory, .gguf file or package>")
        check_range(f"{key}.max_length", self.max_length, 4, 4096)
        if not self.sources:
            fail(f"{key}.sources", "must name at least one candidate source")
        for name in self.sources:
            if not (name.isascii() and name.replace("_", "").isalnum() and name.islower()):
                fail(f"{key}.sources.{name}", "source names are lower-case letters, digits, '_'")
        check_range(f"{key}.image_size", self.image_size, 8, 512)
        check_range(f"{key}.seed", self.seed, 0, 2**31 - 1)
        if not self.budgets:
            fail(f"{key}.budgets", "must list at least one label budget")
        ints = [b for b in self.budgets if b != "all"]
        for b in ints:
            check_range(f"{key}.budgets", b, 1, BIG)
        if ints != sorted(set(ints)) or self.budgets.count("all") > 1 or (
            "all" in self.budgets and self.budgets[-1] != "all"
        ):
            fail(f"{key}.budgets",
                  f"must be strictly increasing, 'all' last, got {list(self.budgets)}")
        names = [str(b) for b in self.budgets]
        for b, n in self.seeds_per_budget.items():
            if b not in names:
                fail(f"{key}.seeds_per_budget.{b}", f"not a budget; expected one of "
                     f"{', '.join(names)} ({key}.budgets)")
            check_range(f"{key}.seeds_per_budget.{b}", n, 1, 10_000)
        check_range(f"{key}.test_per_class", self.test_per_class, 1, BIG)
        check_range(f"{key}.val_per_class", self.val_per_class, 1, BIG)
        for name in ("source_test_fraction", "source_val_fraction"):
            check_range(f"{key}.{name}", getattr(self, name), 0, 0.9, low_open=True)


@dataclass(frozen=True)
class TrainParams:
    """How one network is optimised; shared by pretraining and the trained transfer strategies."""

    epochs: int = 20
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 0.003
    weight_decay: float = 0.0001
    momentum: float = 0.9  # sgd only
    # true = jitter (affine, vectorised); light / strong: torchvision v2 presets
    augment: bool | Literal["none", "jitter", "light", "strong"] = True
    patience: int = 5  # epochs without validation improvement before stopping
    schedule: Literal["constant", "cosine"] = "constant"  # lr per step (cosine: decay to 0)
    warmup_epochs: int = 0  # linear lr warmup, in epochs, before the schedule
    # BatchNorm statistics of the trained network, for the layers the fit moved: running (the
    # moving averages training left) | precise (recomputed exactly on the fit's training
    # inputs, unaugmented; transferlab.models.batchnorm) | auto (precise for the layers whose
    # statistics no data had estimated before the fit, running for the others: a source's
    # statistics are kept, an untrained network's defaults are not). Pretraining: running
    bn_stats: Literal["running", "precise", "auto"] = "running"

    def validate(self, key: str) -> None:
        check_range(f"{key}.epochs", self.epochs, 0, 100_000)
        check_range(f"{key}.batch_size", self.batch_size, 1, 65_536)
        check_range(f"{key}.lr", self.lr, 0, 10, low_open=True)
        check_range(f"{key}.weight_decay", self.weight_decay, 0, 1)
        check_range(f"{key}.momentum", self.momentum, 0, 1)
        check_range(f"{key}.patience", self.patience, 1, 100_000)
        check_range(f"{key}.warmup_epochs", self.warmup_epochs, 0, 100_000)
        if self.epochs and self.warmup_epochs >= self.epochs:
            fail(f"{key}.warmup_epochs", f"{self.warmup_epochs} warmup epochs leave none of "
                 f"the {self.epochs} epochs at the full learning rate")


@dataclass(frozen=True)
class PretrainParams(TrainParams):
    arch: str = "small_cnn"  # a registered backbone (transferlab.models.backbones)
    width: int = 32  # small_cnn: channels of the first block (doubles per block)
    # the pooled feature of a backbone that offers a choice (llm: last | mean); None: its default
    pooling: str | None = None
    # random | torchvision:<arch>:<weights name or local state-dict path> | hf:<dir or package>
    init: str = "random"
    seed: int = 0

    def validate(self, key: str) -> None:
        super().validate(key)
        check_range(f"{key}.width", self.width, 1, 1024)
        check_init(f"{key}.init", self.init, self.arch)
        check_range(f"{key}.seed", self.seed, 0, 2**31 - 1)


def check_hf(key: str, value: str) -> None:
    """``hf:<something>``: a Hugging Face checkpoint directory or an installed package that
    ships one (resolved, and checked to exist, by :mod:`transferlab.models.text`)."""
    if not value.startswith("hf:") or not value[3:]:
        fail(key, f"expected hf:<checkpoint directory or package>, got {value!r}")


TEXT_MODEL_INITS = ("hf:", "llm:")  # inits that name a text model: its weights, tokenizer, layout


def source_arch(arch: str, init: str | None, text: bool) -> str:
    """The architecture of a source's model: on text, a source whose ``init`` names a text
    model (``hf:<...>``, ``llm:<...>``) is that model, and reads the target in its own
    tokenizer's encoding (``prepare`` writes one per such tokenizer); any other source is
    ``arch`` (``pretrain.arch``). So a sentence encoder and a causal LM can be sources of one
    study, beside the null source and scratch, which are ``pretrain.arch``."""
    if text and init is not None and init.startswith(TEXT_MODEL_INITS):
        return init
    return arch


def check_init(key: str, init: str, arch: str | None = None) -> None:
    """``random``, ``torchvision:<arch>:<weights>`` (an image arch), ``hf:<dir>`` (an hf arch) or
    ``llm:<dir, .gguf file or package>`` (an llm arch).
    With ``arch`` (pretrain.init), the init must fit it; a source's own init is checked against
    pretrain.arch by :class:`Params`."""
    if init == "random":
        return
    if init.startswith("hf:"):
        check_hf(key, init)
        if arch is not None and not arch.startswith("hf:"):
            fail(key, f"hf weights need an hf architecture; pretrain.arch is {arch!r}")
        return
    if init.startswith("llm:"):
        if not init[4:]:
            fail(key, f"expected llm:<checkpoint directory, .gguf file or package>, got {init!r}")
        if arch is not None and not arch.startswith("llm:"):
            fail(key, f"llm weights need an llm architecture; pretrain.arch is {arch!r}")
        return
    parts = init.split(":", 2)
    if len(parts) != 3 or parts[0] != "torchvision" or not all(parts[1:]):
        fail(key, f"expected 'random', 'torchvision:<arch>:<weights>' or 'hf:<dir or package>', "
             f"got {init!r}")
    if arch is not None and parts[1] != arch:
        fail(key, f"init architecture {parts[1]!r} differs from pretrain.arch {arch!r}")


@dataclass(frozen=True)
class SelectionParams:
    """How every choice is made (best epoch, early stopping, recommended curve, champion):
    from labels inside the budget, never from the test split."""

    protocol: Literal["within_budget", "external_val"] = "within_budget"
    holdout_fraction: float = 0.34  # within_budget: share of each class's budget labels held out
    min_labels_to_split: int = 2  # within_budget: fewer labels per class -> fixed schedule
    refit: bool = True  # within_budget: retrain on all budget labels for the chosen epochs
    # within_budget: how the budget's labels choose. holdout: one held-out part
    # (holdout_fraction); kfold: stratified folds, every budget label held out exactly once
    # (at most ``folds``, and no more than the smallest class has labels), scores pooled
    scheme: Literal["holdout", "kfold"] = "holdout"
    folds: int = 3  # kfold: folds per replicate
    # a refit whose last epoch's training loss exceeds this times the chosen epoch's (in the
    # choosing run) is flagged unstable in runs.json and the report
    refit_loss_ratio: float = 1.5

    def validate(self, key: str) -> None:
        check_range(f"{key}.holdout_fraction", self.holdout_fraction, 0, 0.9, low_open=True)
        check_range(f"{key}.min_labels_to_split", self.min_labels_to_split, 2, BIG)
        check_range(f"{key}.folds", self.folds, 2, 20)
        check_range(f"{key}.refit_loss_ratio", self.refit_loss_ratio, 1, 1000)
        if self.scheme == "kfold" and not self.refit:
            fail(f"{key}.refit", "kfold needs refit: true (a fold's model saw only part of the "
                 "budget; the refit trains on all of it)")


@dataclass(frozen=True)
class MethodsGrid:
    """The adaptation library's share of the grid: these strategies on these sources only (the
    ``methods`` matrix of ``dvc.yaml``), so a scenario can try many methods on its related
    source and keep the plain strategies elsewhere."""

    sources: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()


@dataclass(frozen=True)
class GridParams:
    """What the transfer stages of ``dvc.yaml`` run: ``strategies`` for every source (the
    ``transfer`` matrix), and ``methods`` on some sources (the ``methods`` matrix). The names
    are checked against the strategy registry by :func:`transferlab.adapt.strategies.resolve`."""

    strategies: tuple[str, ...]
    methods: MethodsGrid = field(default_factory=MethodsGrid)

    def validate(self, key: str) -> None:
        if not self.strategies:
            fail(f"{key}.strategies", "must list at least one strategy")
        for name, values in (("strategies", self.strategies),
                             ("methods.sources", self.methods.sources),
                             ("methods.strategies", self.methods.strategies)):
            if len(set(values)) != len(values):
                fail(f"{key}.{name}", f"must be distinct, got {list(values)}")
        both = sorted(set(self.strategies) & set(self.methods.strategies))
        if both:
            fail(f"{key}.methods.strategies", f"{', '.join(both)} already run(s) on every "
                 "source (grid.strategies); list each strategy once")


@dataclass(frozen=True)
class EvaluateParams:
    confidence: float = 0.95  # level of every confidence interval
    multiplicity: Literal["holm", "bh", "none"] = "bh"  # control of the verdicts (params.yaml's)
    power: float = 0.8  # the minimum detectable effect beside a null verdict is at this power
    target_effect: float = 0.05  # the gain a design should detect: the seeds it takes, reported
    calibration_bins: int = 15
    shift_noise_std: float = 0.1  # shifted test set: Gaussian pixel noise, [0, 1] units
    shift_blur_sigma: float = 0.6  # shifted test set: Gaussian blur, pixels
    shift_rotation_deg: float = 15.0  # shifted test set: max rotation, degrees
    shift_token_drop: float = 0.15  # text shifted test set: share of word tokens replaced by [UNK]
    reach_fraction: float = 0.95  # label efficiency: fraction of scratch@largest budget accuracy
    similarity_probe: int = 64  # what transferred: target pool inputs CKA compares on; 0: off
    # what transferred's estimator: debiased (unbiased HSIC: a small probe measures what a large
    # one does) | biased (Kornblith et al. 2019's plug-in, biased upward at small probes)
    similarity_cka: Literal["debiased", "biased"] = "debiased"
    # head-to-head questions: [curve A, curve B] pairs (<source>/<strategy>, or scratch), A - B
    # paired by seed at every budget both ran, in the family of the verdicts
    contrasts: tuple[tuple[str, str], ...] = ()

    def validate(self, key: str) -> None:
        check_range(f"{key}.confidence", self.confidence, 0.5, 0.999)
        check_range(f"{key}.similarity_probe", self.similarity_probe, 0, 100_000)
        least = 4 if self.similarity_cka == "debiased" else 2
        if 0 < self.similarity_probe < least:
            raise ValueError(f"{key}.similarity_probe: {self.similarity_probe}; the "
                             f"{self.similarity_cka} CKA needs at least {least} probe inputs "
                             "(0 switches it off)")
        check_range(f"{key}.power", self.power, 0.5, 0.999)
        check_range(f"{key}.target_effect", self.target_effect, 0, 1e6, low_open=True)
        check_range(f"{key}.calibration_bins", self.calibration_bins, 2, 1000)
        check_range(f"{key}.shift_noise_std", self.shift_noise_std, 0, 1)
        check_range(f"{key}.shift_blur_sigma", self.shift_blur_sigma, 0, 10)
        check_range(f"{key}.shift_rotation_deg", self.shift_rotation_deg, 0, 180)
        check_range(f"{key}.shift_token_drop", self.shift_token_drop, 0, 1)
        check_range(f"{key}.reach_fraction", self.reach_fraction, 0, 1, low_open=True)
        for i, pair in enumerate(self.contrasts):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"{key}.contrasts[{i}]: expected two different curves "
                                 f"[<source>/<strategy>, <source>/<strategy>], got {list(pair)}")


@dataclass(frozen=True)
class Params:
    common: CommonParams
    tracking: TrackingParams
    prepare: PrepareParams
    pretrain: PretrainParams
    # strategy name -> its block: a raw mapping here; transferlab.adapt.strategies.resolve loads
    # each
    # into that strategy's own frozen params dataclass (so stages that run no strategy do not
    # import, and depend on, every strategy's code)
    transfer: dict[str, Any]
    evaluate: EvaluateParams
    selection: SelectionParams
    grid: GridParams
    execution: ExecutionParams

    def validate(self, key: str) -> None:
        for b, n in self.prepare.seeds_per_budget.items():
            if n < len(self.common.seeds):
                fail(f"prepare.seeds_per_budget.{b}", f"{n} seeds: at least the "
                     f"{len(self.common.seeds)} of common.seeds run at every budget")
        # the checks that need the dataset kinds and backbones (modality, regression sources,
        # tokenizer, arch, a source's init against the arch) run where they are registered:
        # transferlab.models.resolved
        for i, source in enumerate(self.grid.methods.sources):
            if source not in self.prepare.sources:
                fail(f"grid.methods.sources[{i}]", f"unknown source {source!r}; expected one "
                     f"of {', '.join(self.prepare.sources)} (prepare.sources)")


def seeds_at(params: Params) -> dict[str, tuple[int, ...]]:
    """The replicate seeds of every budget: ``common.seeds``, and where
    ``prepare.seeds_per_budget`` asks for more, the next integers after the largest of them."""
    base = tuple(params.common.seeds)
    out = {}
    for b in (str(b) for b in params.prepare.budgets):
        extra = params.prepare.seeds_per_budget.get(b, len(base)) - len(base)
        out[b] = base + tuple(range(max(base) + 1, max(base) + 1 + extra))
    return out


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole ``params.yaml``.

    Args:
        path: the params file.
    Returns:
        The frozen, validated :class:`Params`.
    Raises:
        ParamsError: naming the offending key (or the file, for YAML syntax errors).
    """
    return from_dict(Params, read_yaml_mapping(path), "")

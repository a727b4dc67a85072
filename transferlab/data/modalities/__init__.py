"""Modalities: what kind of examples a prepared dataset holds, and the few things that differ.

A modality is one module of this package that registers a :class:`Modality` by name, as the
strategies register themselves. The prepared store, training, evaluation and the report call
these hooks and never ask which modality they hold:

- :meth:`Modality.to_inputs`: stored examples -> the model's input tensor,
- :meth:`Modality.example_input`: one input batch, e.g. for an MLflow model signature,
- :meth:`Modality.normalization`: the input statistics a new model starts with,
- :meth:`Modality.shifted`: a distribution-shifted copy of the test inputs,
- :meth:`Modality.cleaning_arrays`: what the duplicate and label-issue checks compare,
- :meth:`Modality.describe`: one line for the report.

A manifest without a ``modality`` key is ``image``: the image store is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from transferlab.config.params import EvaluateParams

_REGISTRY: dict[str, Modality] = {}


class Modality:
    """Base class: every hook a modality implements."""

    name: ClassVar[str] = ""
    features: ClassVar[str] = ""  # what the cleaning checks compare, in words
    noun: ClassVar[str] = ""  # what one example is called in the report, plural

    def check(self, examples: np.ndarray) -> None:
        """Raise DataError when ``examples`` (N, ...) is not this modality's stored form."""
        raise NotImplementedError

    def to_inputs(self, examples: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def example_input(self, manifest: dict) -> np.ndarray:
        raise NotImplementedError

    def normalization(self, manifest: dict) -> dict[str, float]:
        raise NotImplementedError

    def shifted(self, x: torch.Tensor, p: EvaluateParams, seed: int, manifest: dict
                ) -> torch.Tensor:
        raise NotImplementedError

    def cleaning_arrays(self, examples: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self, manifest: dict) -> str:
        raise NotImplementedError

    def shift_description(self, p: EvaluateParams) -> str:
        """How :meth:`shifted` changed the test set, for the report."""
        raise NotImplementedError

    def manifest_fields(self, train: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
        """Keys this modality adds to a prepared manifest (besides names, counts, hashes)."""
        raise NotImplementedError


def register(cls: type[Modality]) -> type[Modality]:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"modality name {cls.name!r} is empty or registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Modality:
    """The modality registered as ``name``; the error names the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown modality {name!r}; expected one of "
                         + ", ".join(sorted(_REGISTRY)))
    return _REGISTRY[name]


def of(manifest: dict) -> Modality:
    """The modality of a prepared dataset's manifest (``image`` where none is recorded)."""
    return get(manifest.get("modality", "image"))


from transferlab.data.modalities import image, text  # noqa: E402,F401  (they register themselves)

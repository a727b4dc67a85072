"""Image datasets brought to one format: grayscale uint8 images (N, H, W), int64 labels, names.

Each kind is a module of :mod:`transferlab.data.kinds` (``fonts``, ``sklearn_digits``,
``rotated_digits``, ``imagefolder``, ``torchvision``, ...) that declares its keys and its loader;
:func:`load_dataset` looks the kind up there. Nothing here downloads unless a ``torchvision``
spec says ``download: true``.
"""

from __future__ import annotations

from typing import Any

from transferlab.core.errors import DataError
from transferlab.data import kinds
from transferlab.data.kinds.rotated_digits import rotated_digits  # noqa: F401 (re-exported)
from transferlab.data.raw import RawDataset, resize, to_gray_uint8  # noqa: F401 (re-exported)


def load_dataset(spec: Any, image_size: int, seed: int, key: str) -> RawDataset:
    """Load the dataset a spec names, at ``image_size`` x ``image_size``.

    Args:
        spec: the dataset block (a kind's spec, or the flat block params.yaml writes).
        image_size: side of the square output images.
        seed: seed for synthetic rendering.
        key: the params key of the spec, for error messages.
    Returns:
        The raw dataset with its training part and optional predefined test part.
    """
    spec = kinds.parse_spec(spec if isinstance(spec, kinds.DatasetSpec) else dict(spec), key)
    kind = spec.kind_info
    if kind.modality != "image":
        raise DataError(f"{key}.kind: {spec.kind!r} holds no images")
    return kind.load(spec, kinds.LoadContext(key=key, image_size=image_size, seed=seed))

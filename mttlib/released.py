"""The authors' released distilled sets, evaluated in the space their code made them in: with ZCA,
whitened [0, 1] pixels (:mod:`mttlib.zca` reproduces them); without, pixels normalised with fixed
constants that are not always the dataset's own (CIFAR-100 uses CIFAR-10's). Used by ``python -m
mttlib evaluate --released-images ...``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import Tensor

from mttlib.data import ImageData
from mttlib.io import safe_load

__all__ = ["REFERENCE_NORMALISATION", "released_space", "load_released"]

#: The per-channel mean and std the reference implementation normalises with (no-ZCA runs). It
#: uses CIFAR-10's values for CIFAR-100 too, so its CIFAR-100 sets live in that space.
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
REFERENCE_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": _CIFAR10_STATS, "cifar10-mini": _CIFAR10_STATS, "cifar100": _CIFAR10_STATS,
    "tiny-imagenet": _IMAGENET_STATS, "imagenet:": _IMAGENET_STATS,
}


def released_space(data: ImageData) -> ImageData:
    """``data`` as the reference implementation preprocesses it, for its released tensors.

    ZCA data is returned as it is: the kit whitens the [0, 1] pixels as the reference does.
    Without ZCA the reference normalises with fixed constants (:data:`REFERENCE_NORMALISATION`,
    CIFAR-10's for CIFAR-100); a dataset it never used keeps its own statistics.
    """
    if data.zca is not None:
        return data
    name = data.name.lower()
    stats = REFERENCE_NORMALISATION.get(name) or next(
        (v for k, v in REFERENCE_NORMALISATION.items() if k.endswith(":") and name.startswith(k)), None)
    if stats is None or stats[0] == data.mean and stats[1] == data.std:
        return data
    return dataclasses.replace(data, mean=stats[0], std=stats[1])


def load_released(images_path: str | Path, labels_path: str | Path,
                  data: "ImageData | None" = None) -> tuple[Tensor, Tensor]:
    """Load a published distilled set (the authors' ``images_best.pt`` and ``labels_best.pt``).

    Never unpickles code. The images live in ``released_space(data)``; with ``data`` their shape
    and labels are checked against it. The learning rate is not part of these files: pass the
    published one to :func:`mttlib.evaluate.evaluate_set`. Returns ``(images float32, labels int64)``.
    """
    images, labels = safe_load(images_path), safe_load(labels_path)
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{images_path} should hold one float tensor [N, C, H, W]; it holds {what}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        what = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{labels_path} should hold one integer tensor [N] of class indices; it holds {what}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has "
                         f"{labels.shape[0]} labels; are they from the same run?")
    if data is not None:
        c, h, w = images.shape[1:]
        if c != data.channels or (h, w) != (data.image_size, data.image_size):
            raise ValueError(f"the released images are {c}x{h}x{w} but {data.name} is "
                             f"{data.channels}x{data.image_size}x{data.image_size}; load the dataset "
                             "they were distilled from")
        if labels.numel() and (labels.min() < 0 or labels.max() >= data.num_classes):
            raise ValueError(f"the released labels run {int(labels.min())}..{int(labels.max())} but {data.name} "
                             f"has {data.num_classes} classes; load the dataset they were distilled from")
    return images.detach().float().contiguous(), labels.long()

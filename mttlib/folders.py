"""Image files on disk -> uint8 tensors for :mod:`mttlib.data` and :mod:`mttlib.imagenet`: find, decode, cache."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mttlib.io import cached

__all__ = ["IMAGE_EXTENSIONS", "Split", "subfolders", "image_files", "scan_image_folder", "read_splits"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
Split = list[tuple[Path, int]]  # (image file, label)


def subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The visible image files in ``folder`` (see :data:`IMAGE_EXTENSIONS`), sorted by name."""
    with os.scandir(folder) as entries:  # scandir knows file types without one stat per file
        return sorted(Path(e.path) for e in entries if e.is_file() and not e.name.startswith(".")
                      and e.name.lower().endswith(IMAGE_EXTENSIONS))


def scan_image_folder(path: Path) -> tuple[list[str], dict[str, Split]]:
    """Classes (sorted folder names) and ``(file, label)`` per split of ``path/{train,test}/<class>/<image>``."""
    hint = f"An ImageFolder dataset needs {path}/train/<class>/<image> and {path}/test/<class>/<image>."
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder {path} does not exist. {hint}")
    splits: dict[str, Split] = {"train": [], "test": []}
    names: dict[str, list[str]] = {}
    for split in splits:
        if not (path / split).is_dir():
            found = ", ".join(p.name for p in subfolders(path)) or "nothing"
            raise FileNotFoundError(f"{path} has no {split}/ folder (found: {found}). {hint}")
        for label, folder in enumerate(folders := subfolders(path / split)):
            if not (files := image_files(folder)):
                raise ValueError(f"class folder {folder} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}). "
                                 "Add images or remove the class from both splits.")
            splits[split] += [(f, label) for f in files]
        names[split] = [f.name for f in folders]
    classes, test = names["train"], names["test"]
    if not classes:
        raise ValueError(f"{path}/train holds no class folders. {hint}")
    if classes != test:
        raise ValueError(f"train and test classes of {path} differ: only in train: {sorted(set(classes) - set(test))}, "
                         f"only in test: {sorted(set(test) - set(classes))}. Give every class a folder in both splits.")
    return classes, splits


def _decode(file: Path) -> Tensor:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(file) as image:
            gray = image.mode in ("L", "1")
            array = np.array(image.convert("L" if gray else "RGB"))  # CMYK, palette, alpha: RGB
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode {file} as an image ({err}). Replace or remove the file.") from err
    return torch.from_numpy(array[None] if gray else array.transpose(2, 0, 1))


def _stack(images: list[Tensor], files: list[Path]) -> Tensor:
    sizes = {tuple(image.shape[1:]): file for file, image in zip(files, images)}
    if len(sizes) > 1:
        (a, file_a), (b, file_b) = list(sizes.items())[:2]
        raise ValueError(f"images differ in size: {file_a} is {a[1]}x{a[0]} but {file_b} is {b[1]}x{b[0]}. Resize "
                         "all images to one size first (e.g. with PIL's Image.resize): the kit stacks them.")
    rgb = any(image.shape[0] == 3 for image in images)  # one channel only when every image is grayscale
    stacked = torch.stack([image.expand(3, -1, -1) if rgb else image for image in images])
    return stacked.contiguous(memory_format=torch.channels_last)  # pixel-major, the layout the kit always trained on


def _fingerprint(splits: dict[str, Split], settings: str) -> str:
    digest = hashlib.sha256(f"images-v1|{settings}".encode())
    for split, files in splits.items():
        digest.update(f"[{split}]".encode())
        for file, label in files:
            stat = file.stat()
            digest.update(f"{file.parent.name}/{file.name}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def read_splits(name: str, splits: dict[str, Split], cache_dir: str | Path | None = None, *,
                transform: Callable[[Tensor], Tensor] | None = None, settings: str = "",
                progress: bool = False) -> dict[str, Tensor]:
    """``<split>_images`` (uint8 [N, C, H, W]) and ``<split>_labels`` (int64) for each split.

    Images are read as RGB (one channel when all are grayscale), passed through ``transform`` (a resize) and must
    then share one size; ``cache_dir`` caches them under a fingerprint of file names, sizes, times, labels and
    ``settings``."""
    labels = {s: torch.tensor([label for _, label in files], dtype=torch.int64) for s, files in splits.items()}

    def decode() -> dict[str, Tensor]:
        files = [f for split in splits.values() for f, _ in split]
        work = _decode if transform is None else lambda file: transform(_decode(file))
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
            images = list(tqdm(pool.map(work, files), total=len(files), desc=f"decoding {name}",
                               disable=not progress, leave=False))
        images = _stack(images, files).split([len(f) for f in splits.values()])
        return {k: v for s, x in zip(splits, images) for k, v in ((f"{s}_images", x), (f"{s}_labels", labels[s]))}

    def current(content: dict) -> bool:  # the same labels, and images to go with them
        return all(torch.equal(content[f"{s}_labels"], labels[s]) and content[f"{s}_images"].dtype == torch.uint8
                   and content[f"{s}_images"].shape[:1] == labels[s].shape for s in splits)

    fingerprint = "" if cache_dir is None else _fingerprint(splits, settings)
    content = cached(cache_dir, f"{name}-data", fingerprint, decode, current)
    return {key: content[key] for s in splits for key in (f"{s}_images", f"{s}_labels")}

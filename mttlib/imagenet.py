"""The ImageNet subsets of the MTT paper and Tiny ImageNet, read from image folders on disk.

Names (for :func:`mttlib.data.load_dataset`)
--------------------------------------------
``imagenet:<subset>``
    one of the paper's ten-class ImageNet subsets (:data:`IMAGENET_SUBSETS`: imagenette,
    imagewoof, imagemeow, imagesquawk, imagefruit, imageyellow, imageblub) at 128x128, from the
    original ILSVRC-2012 train split (about 1,300 images per class) and val split (50 per
    class, the test split here). Label ``c`` is the ``c``-th class of the paper's list, not the
    sorted-wnid order: ``imagenet:imagewoof`` label 0 is ImageNet class 193 (Australian
    terrier). Options follow a second colon, comma-separated:
    ``imagenet:imagewoof:resize=center_crop,size=64,per_class=100``:

    - ``resize=paper`` (default) or ``resize=center_crop`` (see :data:`RESIZE_MODES`);
    - ``size=N``: the side in pixels (default 128);
    - ``per_class=N``: only the first N train images of each class (sorted file names), for
      runs on a CPU; the val split is kept whole.
``tiny-imagenet``
    Tiny ImageNet (200 classes, 64x64, 500 train and 50 val images per class) from the folder
    as it is distributed; ``tiny-imagenet:per_class=N`` keeps N train images per class.
``cifar10-mini@<size>``
    an offline **stand-in** for an ImageNet subset, not ImageNet: the kit's embedded CIFAR-10
    images (32 px) upsampled bilinearly to ``size`` px (128 for the subsets), with CIFAR-10's
    ten class names. It lets the 128 px pipeline (ConvNetD5, experts, distillation) run where
    ImageNet is not on disk; its accuracies say nothing about ImageNet. Options as for the
    subsets: ``cifar10-mini@128:per_class=50,test_per_class=20`` (first N train / test images
    of each class). The dataset's name carries the words ``(stand-in for an ImageNet subset)``
    and can be loaded again as it is. See :func:`standin_subset` and
    :func:`load_subset_or_standin` (the real subset when it is found, else the stand-in).

Where the data goes
-------------------
ImageNet: ``$MTT_IMAGENET`` when set, else ``<data root>/imagenet`` (the data root is the
``root`` argument, else ``$MTT_DATA_ROOT``, else ``<kit>/data``). That folder holds
``train/<wnid>/*.JPEG`` and a ``val/`` split in one of these layouts:

1. ``val/<wnid>/*.JPEG``: sorted into class folders (what ``torchvision.datasets.ImageNet``
   leaves behind after unpacking the archives);
2. ``val/*.JPEG`` flat, with ``LOC_val_solution.csv`` (Kaggle's release: a header
   ``ImageId,PredictionString``, then rows ``ILSVRC2012_val_00000001,n01751748 x0 y0 x1 y1 ...``
   whose first word is the image's wnid) next to ``train/``, in ``val/``, or in the folder
   given; Kaggle's own tree ``ILSVRC/Data/CLS-LOC/{train,val}`` is found too;
3. ``val/*.JPEG`` flat (``ILSVRC2012_val_00000001.JPEG`` ...), with torchvision's ``meta.bin``
   (the pair ``(wnid_to_classes, val_wnids)`` that ``torchvision.datasets.ImageNet`` writes,
   ``val_wnids[i]`` being the wnid of ``ILSVRC2012_val_{i+1:08d}.JPEG``), or with the devkit
   ``ILSVRC2012_devkit_t12.tar.gz``, which torchvision turns into that list (it needs scipy).
   The devkit's own ``ILSVRC2012_validation_ground_truth.txt`` counts classes in the devkit's
   ILSVRC2012_ID order, which is *not* the sorted-wnid class index; going through torchvision
   keeps the two apart.

With only the archives (``ILSVRC2012_img_train.tar``, ``ILSVRC2012_img_val.tar`` and the
devkit), :func:`prepare_imagenet` unpacks them once with torchvision into layout 1.

Tiny ImageNet: ``$MTT_TINY_IMAGENET`` when set, else ``<data root>/tiny-imagenet-200``, exactly
as the zip unpacks: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG``,
``val/images/*.JPEG`` and ``val/val_annotations.txt`` (tab-separated: file, wnid, box). The
classes are the sorted wnids of ``wnids.txt`` (the order the reference gets from
``ImageFolder``); the test split is the val split (the test split has no labels).

Storage and caches
------------------
Images are kept as uint8 [N, 3, S, S] (13,000 ImageNet images at 128 px take 640 MB) and
become float per batch through :meth:`mttlib.data.ImageData.preprocess`, normalised with the
ImageNet mean and std that the reference uses for both datasets. Decoding thousands of JPEGs
takes a while, so it runs on a few threads and the result is cached in
``<data root>/.cache/<name>-data-<fingerprint>.pt``; the fingerprint covers the file names,
sizes and modification times, the labels and the resize settings, so a changed tree is
decoded again.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mttlib.data import ImageData, register_dataset
from mttlib.io import CorruptFileError, atomic_save, safe_load
from mttlib.io import data_root

__all__ = [
    "IMAGENET_SUBSETS", "MTT_PAPER_ACCURACY", "RESIZE_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "TINY_MEAN", "TINY_STD",
    "ImageNetData", "SubsetClass", "imagenet_wnids", "imagenet_class_names", "wnid_index",
    "subset_classes", "imagenet_path", "tiny_imagenet_path", "resize_image", "parse_imagenet_name",
    "load_imagenet_subset", "load_tiny_imagenet", "prepare_imagenet",
    "STANDIN_SOURCE", "STANDIN_NOTE", "standin_name", "parse_standin_name", "standin_subset", "is_standin",
    "find_imagenet", "load_subset_or_standin",
]

#: The sorted ILSVRC-2012 wnids, one a line: line ``i`` (from 0) is class index ``i``.
WNIDS_FILE = Path(__file__).resolve().with_name("imagenet_wnids.txt")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The reference normalises Tiny ImageNet with the ImageNet statistics as well.
TINY_MEAN = IMAGENET_MEAN
TINY_STD = IMAGENET_STD
IMAGE_SIZE = 128
TINY_IMAGE_SIZE = 64

#: The paper's subsets: ILSVRC-2012 class indices in the reference code's label order.
IMAGENET_SUBSETS: dict[str, tuple[int, ...]] = {
    "imagenette": (0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
    "imagewoof": (193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
    "imagemeow": (281, 282, 283, 284, 285, 291, 292, 290, 289, 287),
    "imagesquawk": (84, 130, 88, 144, 145, 22, 96, 9, 100, 89),
    "imagefruit": (953, 954, 949, 950, 951, 957, 952, 945, 943, 948),
    "imageyellow": (309, 986, 954, 951, 987, 779, 599, 291, 72, 11),
    "imageblub": (392, 393, 33, 397, 6, 107, 327, 390, 108, 122),
}

#: MTT's own results on the subsets: test accuracy in percent, ``(mean, std)`` over networks
#: trained from scratch on the distilled set, per ipc (1 and 10), 128x128 images, ConvNetD5.
#: From the table of ImageNet-subset results in Cazenavette et al., *Dataset Distillation by
#: Matching Training Trajectories* (CVPR 2022); later papers quote the same ImageNette values.
#: ImageBlub is not in that table (the authors show its distilled images only), so it has no entry.
MTT_PAPER_ACCURACY: dict[str, dict[int, tuple[float, float]]] = {
    "imagenette": {1: (47.7, 0.9), 10: (63.0, 1.3)},
    "imagewoof": {1: (28.6, 0.8), 10: (35.8, 1.8)},
    "imagefruit": {1: (26.6, 0.8), 10: (40.3, 1.3)},
    "imageyellow": {1: (45.2, 0.8), 10: (60.0, 1.5)},
    "imagemeow": {1: (30.7, 1.6), 10: (40.4, 2.2)},
    "imagesquawk": {1: (39.4, 1.5), 10: (52.3, 1.0)},
}

#: How an image of any shape becomes ``size`` x ``size``.
RESIZE_MODES: dict[str, str] = {
    "paper": ("stretch to size x size, aspect not preserved: bilinear, no antialiasing, as the "
              "reference's transforms.Resize((128, 128)) on a tensor with torchvision 0.12 "
              "(its CenterCrop(128) after it changes nothing); rounded to uint8"),
    "center_crop": ("aspect preserved: shorter side to size (bilinear, antialiased), then the "
                    "central size x size"),
}

IMAGENET_ENV = "MTT_IMAGENET"
TINY_ENV = "MTT_TINY_IMAGENET"
TINY_FOLDER = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
KAGGLE_SOLUTION = "LOC_val_solution.csv"
TV_META = "meta.bin"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_CACHE_VERSION = 1
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


# ------------------------------------------------------------------------------------------
# Class tables
# ------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 wnids, sorted; position ``i`` is class index ``i``."""
    try:
        wnids = tuple(line.strip() for line in WNIDS_FILE.read_text().splitlines() if line.strip())
    except OSError as err:
        raise FileNotFoundError(
            f"the ImageNet class table {WNIDS_FILE} is missing ({err}); reinstall the kit."
        ) from err
    if len(wnids) != 1000 or list(wnids) != sorted(set(wnids)):
        raise CorruptFileError(f"{WNIDS_FILE} must hold 1000 distinct sorted wnids; reinstall the kit.")
    return wnids


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order, as torchvision ships them."""
    try:
        from torchvision.models import ResNet18_Weights
        names = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    except (ImportError, AttributeError, KeyError):
        from torchvision.models._meta import _IMAGENET_CATEGORIES
        names = tuple(_IMAGENET_CATEGORIES)
    if len(names) != 1000:
        raise RuntimeError(f"torchvision lists {len(names)} ImageNet class names instead of 1000.")
    return names


@lru_cache(maxsize=1)
def _wnid_to_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def wnid_index(wnid: str) -> int:
    """The ILSVRC-2012 class index of ``wnid`` (e.g. ``'n01440764'`` -> 0)."""
    try:
        return _wnid_to_index()[wnid]
    except KeyError:
        raise KeyError(f"{wnid!r} is not one of the 1000 ILSVRC-2012 wnids.") from None


@dataclass(frozen=True)
class SubsetClass:
    """One class of a subset: its label there, its ImageNet index, wnid and name."""

    label: int
    index: int
    wnid: str
    name: str


def _subset_indices(subset: str) -> tuple[int, ...]:
    key = subset.strip().lower()
    if key not in IMAGENET_SUBSETS:
        raise ValueError(f"unknown ImageNet subset {subset!r}; choose one of {', '.join(IMAGENET_SUBSETS)}.")
    return IMAGENET_SUBSETS[key]


def subset_classes(subset: str) -> list[SubsetClass]:
    """The classes of a paper subset in label order (label ``c`` = ``c``-th listed index)."""
    wnids, names = imagenet_wnids(), imagenet_class_names()
    return [SubsetClass(label, index, wnids[index], names[index])
            for label, index in enumerate(_subset_indices(subset))]


# ------------------------------------------------------------------------------------------
# Paths, resizing, decoding
# ------------------------------------------------------------------------------------------

def _from_env_or_root(env: str, root: str | Path | None, folder: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return data_root(root) / folder


def imagenet_path(root: str | Path | None = None) -> Path:
    """Where the ImageNet tree is looked for: ``$MTT_IMAGENET``, else ``<data root>/imagenet``."""
    return _from_env_or_root(IMAGENET_ENV, root, "imagenet")


def tiny_imagenet_path(root: str | Path | None = None) -> Path:
    """Where Tiny ImageNet is looked for: ``$MTT_TINY_IMAGENET``, else ``<data root>/tiny-imagenet-200``."""
    return _from_env_or_root(TINY_ENV, root, TINY_FOLDER)


def _check_resize(mode: str, size: int) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the image size must be a positive integer, got {size!r}.")


def resize_image(image: Tensor, size: int, mode: str = "paper") -> Tensor:
    """Resize uint8 images [C, H, W] or [N, C, H, W] to ``size`` x ``size`` (see :data:`RESIZE_MODES`)."""
    _check_resize(mode, size)
    if image.dtype != torch.uint8 or image.dim() not in (3, 4):
        raise ValueError(f"resize_image takes uint8 [C, H, W] or [N, C, H, W], got {image.dtype} {tuple(image.shape)}.")
    if tuple(image.shape[-2:]) == (size, size):
        return image.clone()
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    if mode == "paper":
        out = F.interpolate(batch.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        import torchvision.transforms.functional as TF
        out = TF.resize(batch, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        out = TF.center_crop(out, [size, size])
    return out if image.dim() == 4 else out[0]


def _decode(path: Path, size: int, mode: str) -> Tensor:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"))  # CMYK and grayscale JPEGs become RGB too
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode {path} as an image ({err}). Replace or remove the file.") from err
    return resize_image(torch.from_numpy(array).permute(2, 0, 1), size, mode)


def _decode_all(files: list[Path], size: int, mode: str, workers: int | None, progress: bool,
                what: str) -> Tensor:
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)

    def work(i: int) -> None:
        out[i] = _decode(files[i], size, mode)

    workers = workers or min(8, os.cpu_count() or 1)
    if len(files) < 16 or workers == 1:
        for i in range(len(files)):
            work(i)
        return out
    from tqdm.auto import tqdm
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL and torch decode and resize without the GIL
        for _ in tqdm(pool.map(work, range(len(files))), total=len(files), desc=f"decoding {what}",
                      disable=not progress, leave=False):
            pass
    return out


def _images_in(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries
                      if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(_IMAGE_SUFFIXES))


# ------------------------------------------------------------------------------------------
# The dataset container and its cache
# ------------------------------------------------------------------------------------------

@dataclass
class ImageNetData(ImageData):
    """:class:`~mttlib.data.ImageData` that also records how its images were made.

    ``source`` (subset, ImageNet class indices and wnids, resize mode and rule, image size,
    train images per class) is added to :meth:`describe`, so an experts folder notices data
    made another way.
    """

    source: dict = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """:meth:`ImageData.describe` plus ``source``: how the images were read and resized."""
        description = super().describe()
        description["source"] = dict(self.source)
        return description


Split = list[tuple[Path, int]]


def _fingerprint(settings: dict, splits: dict[str, Split]) -> str:
    digest = hashlib.sha256(f"imagenet-v{_CACHE_VERSION}-{sorted(settings.items())!r}".encode())
    for split in ("train", "test"):
        digest.update(f"[{split}]".encode())
        for file, label in splits[split]:
            stat = file.stat()
            digest.update(f"{file.name}|{file.parent.name}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80] or "dataset"


def _read_cache(path: Path, fingerprint: str, splits: dict[str, Split], size: int) -> dict[str, Tensor] | None:
    try:
        content = safe_load(path)
    except (FileNotFoundError, CorruptFileError):
        return None
    try:
        if content.get("fingerprint") != fingerprint:
            return None
        tensors = {}
        for split in ("train", "test"):
            images, labels = content[f"{split}_images"], content[f"{split}_labels"]
            n = len(splits[split])
            if (images.dtype != torch.uint8 or tuple(images.shape) != (n, 3, size, size)
                    or labels.tolist() != [label for _, label in splits[split]]):
                return None
            tensors[f"{split}_images"], tensors[f"{split}_labels"] = images, labels.long()
        return tensors
    except (AttributeError, KeyError, TypeError):
        return None


def _write_cache(path: Path, content: dict) -> None:
    stem = path.name.rsplit("-", 1)[0]
    try:
        for stale in path.parent.glob(f"{stem}-*.pt"):  # older versions of the same dataset
            if stale != path and re.fullmatch(re.escape(stem) + r"-[0-9a-f]{20}\.pt", stale.name):
                stale.unlink()
        atomic_save(content, path)
    except OSError:
        pass  # a read-only data root just decodes again next time


def _materialise(name: str, splits: dict[str, Split], size: int, mode: str, settings: dict,
                 cache_dir: Path | None, workers: int | None, progress: bool) -> dict[str, Tensor]:
    """Decoded uint8 tensors and labels for both splits, from the cache when it is current."""
    cache_path = fingerprint = None
    if cache_dir is not None:
        fingerprint = _fingerprint(settings, splits)
        cache_path = Path(cache_dir) / f"{_slug(name)}-data-{fingerprint}.pt"
        cached = _read_cache(cache_path, fingerprint, splits, size)
        if cached is not None:
            return cached
    tensors = {}
    for split in ("train", "test"):
        files = [f for f, _ in splits[split]]
        tensors[f"{split}_images"] = _decode_all(files, size, mode, workers, progress, f"{name} {split}")
        tensors[f"{split}_labels"] = torch.tensor([label for _, label in splits[split]], dtype=torch.int64)
    if cache_path is not None:
        _write_cache(cache_path, {"format": "mttlib-imagenet-cache", "fingerprint": fingerprint, **tensors})
    return tensors


def _cache_dir(cache_dir: str | Path | None, cache: bool) -> Path | None:
    if not cache:
        return None
    return Path(cache_dir).expanduser() if cache_dir not in (None, "") else data_root() / ".cache"


def _check_per_class(per_class: int | None) -> None:
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}.")


# ------------------------------------------------------------------------------------------
# ImageNet: finding the tree and the val labels
# ------------------------------------------------------------------------------------------

def _find_tree(base: Path) -> Path:
    for candidate in (base, base / "ILSVRC" / "Data" / "CLS-LOC"):
        if (candidate / "train").is_dir():
            return candidate
    archives = [a for a in (TRAIN_TAR, VAL_TAR, DEVKIT) if (base / a).is_file()]
    if archives:
        raise FileNotFoundError(
            f"{base} holds the ImageNet archives ({', '.join(archives)}) but no unpacked train/ folder. "
            f"Unpack them once (hours, about 150 GB) with: python -c \"from mttlib.imagenet import "
            f"prepare_imagenet; prepare_imagenet('{base}')\"."
        )
    raise FileNotFoundError(
        f"no ImageNet tree at {base}: expected {base}/train/<wnid>/*.JPEG and {base}/val/. Point the kit at "
        f"your copy with the environment variable {IMAGENET_ENV}=/path/to/imagenet, or put (or link) it at "
        "<data root>/imagenet. ImageNet cannot be downloaded automatically (it needs an image-net.org account)."
    )


def _missing_class(cls: SubsetClass, subset: str, folder: Path, split: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"ImageNet class {cls.index} '{cls.name}' ({cls.wnid}) of {subset} has no {split} folder: expected "
        f"{folder}/{cls.wnid}/ with its images. Is the tree complete?"
    )


def _train_files(tree: Path, classes: list[SubsetClass], subset: str, per_class: int | None) -> Split:
    files: Split = []
    for cls in classes:
        folder = tree / "train" / cls.wnid
        if not folder.is_dir():
            raise _missing_class(cls, subset, tree / "train", "train")
        images = _images_in(folder)
        if not images:
            raise ValueError(f"{folder} (class {cls.index} '{cls.name}') holds no images.")
        files += [(f, cls.label) for f in images[:per_class]]
    return files


def _kaggle_labels(path: Path) -> dict[str, str]:
    labels = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise ValueError(f"header {header!r} is not 'ImageId,PredictionString'")
            for row in reader:
                if len(row) >= 2 and row[1].split():
                    labels[row[0].strip()] = row[1].split()[0]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise CorruptFileError(f"cannot read {path} as Kaggle's LOC_val_solution.csv ({err}).") from err
    return labels


def _val_wnids_from_devkit(devkit: Path) -> list[str]:
    """Let torchvision parse the devkit (meta.mat + ground truth) in a scratch folder."""
    from torchvision.datasets import imagenet as tv_imagenet
    scratch = Path(tempfile.mkdtemp(prefix="mtt-devkit-"))
    try:
        os.symlink(devkit.resolve(), scratch / DEVKIT)
        try:
            tv_imagenet.parse_devkit_archive(str(scratch))
        except ImportError as err:
            raise ImportError(f"reading the ImageNet devkit {devkit} needs scipy: pip install scipy "
                              "(or sort val/ into wnid folders, or use Kaggle's LOC_val_solution.csv).") from err
        return list(safe_load(scratch / TV_META)[1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _flat_val_labels(tree: Path, base: Path, images: list[Path]) -> tuple[dict[Path, str], str]:
    """wnid of each flat val image, and which ground truth gave it."""
    for folder in dict.fromkeys((tree / "val", tree, base)):
        if (folder / KAGGLE_SOLUTION).is_file():
            labels = _kaggle_labels(folder / KAGGLE_SOLUTION)
            return {f: labels[f.stem] for f in images if f.stem in labels}, str(folder / KAGGLE_SOLUTION)
    val_wnids = source = None
    for folder in dict.fromkeys((tree, base)):
        if (folder / TV_META).is_file():
            meta = safe_load(folder / TV_META)
            if not (isinstance(meta, (tuple, list)) and len(meta) == 2 and isinstance(meta[1], (list, tuple))):
                raise CorruptFileError(f"{folder / TV_META} is not torchvision's ImageNet meta file "
                                       "(wnid_to_classes, val_wnids). Delete it and let torchvision write it again.")
            val_wnids, source = list(meta[1]), str(folder / TV_META)
            break
        if (folder / DEVKIT).is_file():
            val_wnids, source = _val_wnids_from_devkit(folder / DEVKIT), str(folder / DEVKIT)
            break
    if val_wnids is None:
        raise FileNotFoundError(
            f"{tree / 'val'} holds {len(images)} images in one folder and no ground truth was found. Supported: "
            f"(a) val/<wnid>/ class folders; (b) Kaggle's {KAGGLE_SOLUTION} in {tree}, {tree / 'val'} or {base}; "
            f"(c) torchvision's {TV_META} or the devkit {DEVKIT} in {tree}."
        )
    wnids = {}
    for f in images:
        match = _VAL_NAME.fullmatch(f.stem)
        if match and 0 < int(match.group(1)) <= len(val_wnids):
            wnids[f] = val_wnids[int(match.group(1)) - 1]
    return wnids, source


def _val_files(tree: Path, base: Path, classes: list[SubsetClass], subset: str) -> tuple[Split, str]:
    val = tree / "val"
    if not val.is_dir():
        archive = " (ILSVRC2012_img_val.tar is there: see prepare_imagenet)" if (base / VAL_TAR).is_file() else ""
        raise FileNotFoundError(f"the ImageNet tree {tree} has train/ but no val/ folder{archive}.")
    with os.scandir(val) as entries:
        has_class_dirs = any(e.is_dir() and re.fullmatch(r"n\d{8}", e.name) for e in entries)
    if has_class_dirs:
        files: Split = []
        for cls in classes:
            if not (val / cls.wnid).is_dir():
                raise _missing_class(cls, subset, val, "val")
            files += [(f, cls.label) for f in _images_in(val / cls.wnid)]
        layout = "val/<wnid>/ folders"
    else:
        wnids, layout = _flat_val_labels(tree, base, _images_in(val))
        label_of = {cls.wnid: cls.label for cls in classes}
        files = sorted(((f, label_of[w]) for f, w in wnids.items() if w in label_of), key=lambda p: (p[1], p[0].name))
    counts = np.bincount([label for _, label in files], minlength=len(classes))
    for cls in classes:
        if counts[cls.label] == 0:
            raise ValueError(f"no val images of ImageNet class {cls.index} '{cls.name}' ({cls.wnid}) were found "
                             f"in {val} (labels from {layout}). Is the val split complete?")
    return files, layout


def parse_imagenet_name(name: str) -> dict[str, Any]:
    """Split ``imagenet:<subset>[:key=value,...]`` into ``subset``, ``resize``, ``size``, ``per_class``."""
    spec = name.strip()
    if spec.lower().startswith("imagenet:"):
        spec = spec[len("imagenet:"):]
    subset, _, options = spec.partition(":")
    _subset_indices(subset)
    parsed: dict[str, Any] = {"subset": subset.strip().lower(), "resize": "paper", "size": IMAGE_SIZE,
                              "per_class": None}
    for option in filter(None, (o.strip() for o in re.split(r"[,:]", options))):
        key, eq, value = (p.strip() for p in option.partition("="))
        key = key.lower().replace("-", "_")
        try:
            if not eq or key not in ("resize", "size", "per_class"):
                raise ValueError
            parsed[key] = value.lower() if key == "resize" else int(value)
        except ValueError:
            raise ValueError(
                f"cannot read option {option!r} of {name!r}; options are resize=paper|center_crop, size=N and "
                "per_class=N, e.g. 'imagenet:imagewoof:resize=center_crop,size=64'."
            ) from None
    _check_resize(parsed["resize"], parsed["size"])
    _check_per_class(parsed["per_class"])
    return parsed


def load_imagenet_subset(subset: str, path: str | Path | None = None, *, resize: str = "paper",
                         image_size: int = IMAGE_SIZE, per_class: int | None = None,
                         cache_dir: str | Path | None = None, cache: bool = True, workers: int | None = None,
                         progress: bool = True, name: str | None = None) -> ImageNetData:
    """Load one of the paper's ImageNet subsets as uint8 tensors (train = train, test = val).

    Args:
        subset: a key of :data:`IMAGENET_SUBSETS`; labels follow its order.
        path: the ImageNet folder (default :func:`imagenet_path`: ``$MTT_IMAGENET`` or
            ``<data root>/imagenet``); see the module docstring for the layouts read.
        resize: ``"paper"`` or ``"center_crop"`` (:data:`RESIZE_MODES`).
        image_size: side of the stored images (128 in the paper).
        per_class: keep only the first ``per_class`` train images of each class.
        cache_dir: where the decoded tensors are cached (default ``<data root>/.cache``);
            ``cache=False`` decodes every time.
        workers: decoding threads (default up to 8).
        progress: show a progress bar while decoding.
        name: the dataset name recorded (default ``imagenet:<subset>`` plus the options).
    """
    _check_resize(resize, image_size)
    _check_per_class(per_class)
    classes = subset_classes(subset)
    subset = subset.strip().lower()
    base = Path(path).expanduser() if path not in (None, "") else imagenet_path()
    tree = _find_tree(base)
    splits = {"train": _train_files(tree, classes, subset, per_class)}
    splits["test"], _ = _val_files(tree, base, classes, subset)
    if name is None:
        options = [f"resize={resize}"] * (resize != "paper") + [f"size={image_size}"] * (image_size != IMAGE_SIZE)
        options += [f"per_class={per_class}"] * (per_class is not None)
        name = f"imagenet:{subset}" + (":" + ",".join(options) if options else "")
    source = {"dataset": "ILSVRC-2012", "subset": subset, "class_indices": [c.index for c in classes],
              "wnids": [c.wnid for c in classes], "resize": resize, "resize_rule": RESIZE_MODES[resize],
              "image_size": image_size, "train_per_class": per_class}
    settings = {k: source[k] for k in ("subset", "resize", "image_size", "train_per_class")}
    tensors = _materialise(name, splits, image_size, resize, settings, _cache_dir(cache_dir, cache), workers, progress)
    return ImageNetData(name=name, classes=[c.name for c in classes], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        source=source, **tensors)


def prepare_imagenet(path: str | Path | None = None) -> Path:
    """Unpack the ILSVRC-2012 archives in ``path`` into ``train/<wnid>/`` and ``val/<wnid>/`` with torchvision.

    Needs ``ILSVRC2012_devkit_t12.tar.gz`` and ``ILSVRC2012_img_train.tar`` /
    ``ILSVRC2012_img_val.tar`` in ``path`` (checked by md5), scipy for the devkit, hours of time
    and about 150 GB of space. Splits already unpacked are left alone. Returns ``path``.
    """
    from torchvision.datasets import imagenet as tv_imagenet
    base = Path(path).expanduser() if path not in (None, "") else imagenet_path()
    if not (base / DEVKIT).is_file():
        raise FileNotFoundError(f"{base / DEVKIT} is missing: download the devkit (Development kit, Task 1 & 2) "
                                "from image-net.org next to the image archives.")
    if not (base / TV_META).is_file():
        tv_imagenet.parse_devkit_archive(str(base))
    for folder, archive, unpack in (("train", TRAIN_TAR, tv_imagenet.parse_train_archive),
                                    ("val", VAL_TAR, tv_imagenet.parse_val_archive)):
        if not (base / folder).is_dir():
            if not (base / archive).is_file():
                raise FileNotFoundError(f"{base / archive} is missing (and {base / folder}/ is not unpacked).")
            unpack(str(base))
    return base


# ------------------------------------------------------------------------------------------
# Tiny ImageNet
# ------------------------------------------------------------------------------------------

def _tiny_names(folder: Path, wnids: list[str]) -> list[str]:
    names: dict[str, str] = {}
    words = folder / "words.txt"
    if words.is_file():
        wanted = set(wnids)
        with open(words, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                wnid, _, text = line.rstrip("\n").partition("\t")
                if wnid in wanted:
                    names[wnid] = text.split(",")[0].strip() or wnid
    imagenet = _wnid_to_index()
    fallback = imagenet_class_names()
    return [names.get(w) or (fallback[imagenet[w]] if w in imagenet else w) for w in wnids]


def _tiny_val(folder: Path, label_of: dict[str, int]) -> Split:
    val = folder / "val"
    annotations = val / "val_annotations.txt"
    files: Split = []
    if annotations.is_file():
        with open(annotations, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 2 or parts[1] not in label_of:
                    raise CorruptFileError(f"{annotations} line {number} ({line.strip()!r}) does not name an image "
                                           "and one of the wnids of wnids.txt (tab-separated: file, wnid, box).")
                file, wnid = parts[0], parts[1]
                for candidate in (val / "images" / file, val / "images" / wnid / file, val / wnid / file):
                    if candidate.is_file():
                        files.append((candidate, label_of[wnid]))
                        break
                else:
                    raise FileNotFoundError(f"{annotations} lists {file} but {val / 'images' / file} does not exist.")
    else:
        for wnid, label in label_of.items():  # val re-sorted into class folders by hand
            for parent in (val / "images" / wnid, val / wnid):
                if parent.is_dir():
                    files += [(f, label) for f in _images_in(parent)]
                    break
        if not files:
            raise FileNotFoundError(f"{annotations} is missing: Tiny ImageNet's val labels come from it "
                                    "(file<TAB>wnid<TAB>box). Unpack tiny-imagenet-200.zip again.")
    return sorted(files, key=lambda p: (p[1], p[0].name))


def load_tiny_imagenet(path: str | Path | None = None, *, per_class: int | None = None,
                       cache_dir: str | Path | None = None, cache: bool = True, workers: int | None = None,
                       progress: bool = True, name: str | None = None, download: bool = False) -> ImageNetData:
    """Load Tiny ImageNet (64x64, 200 classes) as uint8 tensors; the test split is the val split.

    ``path`` is the ``tiny-imagenet-200`` folder (default :func:`tiny_imagenet_path`); classes are
    the sorted wnids of ``wnids.txt``, named from ``words.txt``. ``per_class`` keeps the first N
    train images of each class. ``download=True`` fetches and unpacks the zip when it is missing.
    Other arguments as in :func:`load_imagenet_subset`.
    """
    _check_per_class(per_class)
    folder = Path(path).expanduser() if path not in (None, "") else tiny_imagenet_path()
    if not (folder / "wnids.txt").is_file() and download:
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(TINY_URL, str(folder.parent), filename=f"{TINY_FOLDER}.zip")
        if folder.name != TINY_FOLDER and (folder.parent / TINY_FOLDER).is_dir() and not folder.exists():
            (folder.parent / TINY_FOLDER).rename(folder)
    if not (folder / "wnids.txt").is_file():
        raise FileNotFoundError(
            f"no Tiny ImageNet at {folder} (wnids.txt is missing). Unpack tiny-imagenet-200.zip ({TINY_URL}) into "
            f"the data root, set {TINY_ENV}=/path/to/tiny-imagenet-200, or load it with download=True."
        )
    wnids = sorted({w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()})
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    train: Split = []
    for wnid, label in label_of.items():
        for parent in (folder / "train" / wnid / "images", folder / "train" / wnid):
            if parent.is_dir() and (images := _images_in(parent)):
                train += [(f, label) for f in images[:per_class]]
                break
        else:
            raise FileNotFoundError(f"Tiny ImageNet class {wnid} has no train images: expected "
                                    f"{folder / 'train' / wnid / 'images'}/*.JPEG.")
    splits = {"train": train, "test": _tiny_val(folder, label_of)}
    name = name or ("tiny-imagenet" + (f":per_class={per_class}" if per_class is not None else ""))
    source = {"dataset": "Tiny ImageNet", "wnids": wnids, "resize": "none", "image_size": TINY_IMAGE_SIZE,
              "resize_rule": "none: the images are 64x64 already (any other size is stretched as in 'paper')",
              "train_per_class": per_class}
    settings = {"dataset": "tiny", "train_per_class": per_class}
    tensors = _materialise(name, splits, TINY_IMAGE_SIZE, "paper", settings, _cache_dir(cache_dir, cache),
                           workers, progress)
    return ImageNetData(name=name, classes=_tiny_names(folder, wnids), mean=TINY_MEAN, std=TINY_STD,
                        source=source, **tensors)


# ------------------------------------------------------------------------------------------
# An offline stand-in: the embedded CIFAR-10 images upsampled to ImageNet-subset size
# ------------------------------------------------------------------------------------------

#: The embedded dataset the stand-in is made from.
STANDIN_SOURCE = "cifar10-mini"
#: The words every stand-in's name ends with, so no figure or run folder passes it off as ImageNet.
STANDIN_NOTE = "stand-in for an ImageNet subset"
_STANDIN_NAME = re.compile(r"^\s*cifar10[-_]?mini@(\d+)\s*(?::\s*([^()]*?))?\s*(?:\(.*\))?\s*$", re.IGNORECASE)
_STANDIN_MIN_SIZE = 32
_STANDIN_CHUNK = 256  # images upsampled at a time: bounds the float copy (256 x 3 x 128 x 128 x 4 B = 50 MB)


def standin_name(image_size: int = IMAGE_SIZE, per_class: int | None = None,
                 test_per_class: int | None = None) -> str:
    """The registry name of a stand-in, e.g. ``'cifar10-mini@128:per_class=50 (stand-in for an ImageNet subset)'``."""
    options = [f"per_class={per_class}"] * (per_class is not None)
    options += [f"test_per_class={test_per_class}"] * (test_per_class is not None)
    return f"{STANDIN_SOURCE}@{image_size}" + (":" + ",".join(options) if options else "") + f" ({STANDIN_NOTE})"


def parse_standin_name(name: str) -> dict[str, Any]:
    """Read ``cifar10-mini@<size>[:per_class=N,test_per_class=M][ (note)]``.

    Returns ``{"size", "per_class", "test_per_class"}`` (None where not given); a trailing note
    in parentheses, as in the names :func:`standin_name` makes, is ignored.
    """
    match = _STANDIN_NAME.match(name)
    if match is None:
        raise ValueError(f"cannot read {name!r} as a stand-in name; write 'cifar10-mini@<size>' with an optional "
                         "':per_class=N,test_per_class=M', e.g. 'cifar10-mini@128:per_class=50'.")
    parsed: dict[str, Any] = {"size": int(match.group(1)), "per_class": None, "test_per_class": None}
    for option in filter(None, (o.strip() for o in (match.group(2) or "").split(","))):
        key, eq, value = (p.strip() for p in option.partition("="))
        key = key.lower().replace("-", "_")
        if not eq or key not in ("per_class", "test_per_class") or not value.isdigit():
            raise ValueError(f"cannot read option {option!r} of {name!r}; the stand-in's options are per_class=N and "
                             "test_per_class=N, e.g. 'cifar10-mini@128:per_class=50,test_per_class=20'.")
        parsed[key] = int(value)
    _check_standin(parsed["size"], parsed["per_class"], parsed["test_per_class"])
    return parsed


def _check_standin(image_size: int, per_class: int | None, test_per_class: int | None) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < _STANDIN_MIN_SIZE:
        raise ValueError(f"the stand-in upsamples 32 px CIFAR images, so its size must be an integer of at least "
                         f"{_STANDIN_MIN_SIZE} px, got {image_size!r}; for 32 px use '{STANDIN_SOURCE}' itself.")
    _check_per_class(per_class)
    if test_per_class is not None:
        try:
            _check_per_class(test_per_class)
        except ValueError:
            raise ValueError(f"test_per_class must be a positive integer or None, got {test_per_class!r}.") from None


def _first_per_class(labels: Tensor, num_classes: int, n: int | None) -> Tensor:
    """Indices of the first ``n`` images of each class (all when ``n`` is None), class by class."""
    picks = [(labels == c).nonzero().flatten()[:n] for c in range(num_classes)]
    return torch.cat(picks)


def _upsample(images: Tensor, size: int) -> Tensor:
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for start in range(0, images.shape[0], _STANDIN_CHUNK):
        # the 'paper' resize is plain bilinear (half-pixel centres), rounded to uint8
        out[start:start + _STANDIN_CHUNK] = resize_image(images[start:start + _STANDIN_CHUNK], size, "paper")
    return out


def standin_subset(image_size: int = IMAGE_SIZE, per_class: int | None = None, root: str | Path | None = None, *,
                   test_per_class: int | None = None) -> ImageNetData:
    """An offline stand-in for an ImageNet subset: the embedded CIFAR-10 images upsampled to ``image_size``.

    Ten classes, like the subsets, but they are CIFAR-10's (airplane ... truck) and the pictures
    are 32 px photos stretched bilinearly to ``image_size`` px (128 by default), so they look
    blurred. Use it to run the 128 px pipeline offline; its accuracies say nothing about ImageNet.

    Args:
        image_size: side in pixels (at least 32).
        per_class: keep the first ``per_class`` train images of each class (sorted file names);
            None keeps all 500.
        root: data root handed to :func:`mttlib.data.load_dataset` (the embedded data ships
            with the kit, so it is rarely needed).
        test_per_class: keep the first ``test_per_class`` test images of each class (None: all 100).

    Returns:
        An :class:`ImageNetData` named by :func:`standin_name`, normalised with the embedded
        dataset's per-channel mean and std (bilinear upsampling leaves the mean unchanged), with
        ``source["standin"] = True``.
    """
    from mttlib.data import load_dataset

    _check_standin(image_size, per_class, test_per_class)
    base = load_dataset(STANDIN_SOURCE, root)
    tensors = {}
    for split, n in (("train", per_class), ("test", test_per_class)):
        labels = getattr(base, f"{split}_labels")
        index = _first_per_class(labels, base.num_classes, n)
        tensors[f"{split}_images"] = _upsample(getattr(base, f"{split}_images")[index], image_size)
        tensors[f"{split}_labels"] = labels[index].clone()
    source = {"dataset": STANDIN_SOURCE, "standin": True, "standin_for": "an ImageNet subset",
              "resize": "bilinear upsampling, no antialiasing, rounded to uint8",
              "source_size": base.image_size, "image_size": image_size, "train_per_class": per_class,
              "test_per_class": test_per_class,
              "note": "CIFAR-10 photos and class names, not ImageNet; normalised with cifar10-mini's statistics"}
    return ImageNetData(name=standin_name(image_size, per_class, test_per_class), classes=list(base.classes),
                        mean=base.mean, std=base.std, source=source, **tensors)


def is_standin(data: ImageData) -> bool:
    """True when ``data`` is the offline stand-in rather than real ImageNet images."""
    return bool(getattr(data, "source", {}).get("standin", False))


def find_imagenet(root: str | Path | None = None) -> Path | None:
    """The ImageNet tree (the folder holding ``train/``) under ``$MTT_IMAGENET`` or ``<root>/imagenet``, or None."""
    base = imagenet_path(root)
    try:
        return _find_tree(base)
    except FileNotFoundError:
        return None


def load_subset_or_standin(subset: str, root: str | Path | None = None, *, per_class: int | None = None,
                           test_per_class: int | None = None, image_size: int = IMAGE_SIZE,
                           progress: bool = True) -> ImageNetData:
    """The paper subset ``subset`` when an ImageNet tree is found, else the offline stand-in.

    With a tree (see :func:`find_imagenet`) this is what ``load_dataset('imagenet:<subset>:...')``
    returns, with ``per_class`` train images per class (the val split is kept whole: ``test_per_class``
    applies to the stand-in only); a tree that is there but incomplete raises its error rather
    than falling back. Without one it is :func:`standin_subset`. :func:`is_standin` tells which.
    """
    _subset_indices(subset)
    if find_imagenet(root) is None:
        return standin_subset(image_size, per_class, root, test_per_class=test_per_class)
    # the same call as load_dataset('imagenet:<subset>:...', root), with the progress bar under our control
    data = load_imagenet_subset(subset, imagenet_path(root), image_size=image_size, per_class=per_class,
                                cache_dir=data_root(root) / ".cache", progress=progress)
    data.source = {**data.source, "standin": False}
    return data


# ------------------------------------------------------------------------------------------
# Registry entries for mttlib.data.load_dataset
# ------------------------------------------------------------------------------------------

@register_dataset("imagenet:", prefix=True)
def _load_imagenet(name: str, root: Path, *, download: bool = False) -> ImageNetData:
    options = parse_imagenet_name(name)
    return load_imagenet_subset(options["subset"], imagenet_path(root), resize=options["resize"],
                                image_size=options["size"], per_class=options["per_class"],
                                cache_dir=root / ".cache", name=name.strip())


def _tiny_per_class(name: str) -> int | None:
    spec = name.strip()[len("tiny-imagenet:"):] if ":" in name else ""
    if not spec:
        return None
    key, _, value = spec.partition("=")
    if key.strip().lower().replace("-", "_") != "per_class" or not value.strip().isdigit():
        raise ValueError(f"cannot read {name!r}: the only Tiny ImageNet option is per_class=N, "
                         "e.g. 'tiny-imagenet:per_class=50'.")
    return int(value)


@register_dataset("tiny-imagenet", aliases=("tiny", "tinyimagenet", "tiny-imagenet-200"))
def _load_tiny(name: str, root: Path, *, download: bool = False) -> ImageNetData:
    return load_tiny_imagenet(tiny_imagenet_path(root), cache_dir=root / ".cache", name=name, download=download)


@register_dataset("tiny-imagenet:", prefix=True)
def _load_tiny_options(name: str, root: Path, *, download: bool = False) -> ImageNetData:
    return load_tiny_imagenet(tiny_imagenet_path(root), per_class=_tiny_per_class(name), cache_dir=root / ".cache",
                              name=name.strip(), download=download)


@register_dataset("cifar10-mini@", prefix=True)
def _load_standin(name: str, root: Path, *, download: bool = False) -> ImageNetData:
    options = parse_standin_name(name)
    return standin_subset(options["size"], options["per_class"], root, test_per_class=options["test_per_class"])

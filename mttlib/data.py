"""Datasets as plain tensors: images, labels, class names, normalisation and ZCA whitening.

Taught in notebook ``00_setup_and_data``. :func:`load_dataset` returns an :class:`ImageData` of uint8 images, which
:meth:`ImageData.preprocess` makes into network input. Names: ``cifar10-mini`` (embedded, offline); ``cifar10``,
``cifar100``, ``mnist``, ``fashion_mnist``, ``svhn`` (torchvision's files in ``<data root>/<name>``, downloaded on
request); ``folder:PATH`` (``PATH/{train,test}/<class>/<image>``); those of :mod:`mttlib.imagenet`;
:func:`register_dataset` adds more."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from mttlib.folders import read_splits, scan_image_folder
from mttlib.io import KIT_ROOT, CorruptFileError, cached, data_root
from mttlib.zca import RECIPE as ZCA_RECIPE, ZCA, ZCA_EPS

__all__ = ["EMBEDDED_DATASET", "DSA_STRATEGY", "DIGIT_STRATEGY", "dsa_strategy_for", "ImageData", "channel_stats",
           "register_dataset", "dataset_names", "load_dataset", "load_image_folder"]

EMBEDDED_DATASET = "cifar10-mini"
EMBEDDED_DIR = KIT_ROOT / "data" / EMBEDDED_DATASET
EMBEDDED_CACHE_DIR = KIT_ROOT / "data" / ".cache"
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"  # a flipped digit is another digit (or none)


def dsa_strategy_for(digits: bool) -> str:
    """The DSA strategy the kit uses for a dataset: every operation, but no flips for digits."""
    return DIGIT_STRATEGY if digits else DSA_STRATEGY


@dataclass
class ImageData:
    """A classification dataset: uint8 images [N, C, H, W], int64 labels and class names.

    ``mean``/``std``: per-channel statistics of the [0, 1] pixels; ``zca``: when fitted, whitens them instead;
    ``digits``: MNIST and SVHN, where a flipped image is another class; ``source``: how the images were made (in
    :meth:`describe`, so an experts folder notices data made another way). Taught in notebook ``00_setup_and_data``."""
    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca: ZCA | None = None
    digits: bool = False
    source: dict = field(default_factory=dict)
    _tensor_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if x.dtype != torch.uint8 or x.dim() != 4 or y.shape != x.shape[:1]:
                raise ValueError(f"{split}_images must be uint8 [N, C, H, W] and {split}_labels [N], got "
                                 f"{x.dtype} {tuple(x.shape)} and {tuple(y.shape)}.")
        if not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels}), got {self.mean}, {self.std}.")
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))

    @property
    def channels(self) -> int:
        """Colour channels per image (3 for RGB, 1 for grayscale)."""
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        h, w = self.train_images.shape[-2:]
        if h != w:
            raise ValueError(f"{self.name} images are {h}x{w}, not square; the kit's models expect square images.")
        return int(h)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def dsa_strategy(self) -> str:
        """The DSA augmentation strategy for this dataset (no flips for digits)."""
        return dsa_strategy_for(self.digits)

    def _stats(self, like: Tensor) -> list[Tensor]:
        return [torch.tensor(v, dtype=like.dtype, device=like.device).view(-1, 1, 1) for v in (self.mean, self.std)]

    def preprocess(self, x: Tensor, device: torch.device | str | None = None) -> Tensor:
        """Images (uint8, or float in [0, 1]) -> float32 network input: /255, then ZCA-whitened if a ZCA is
        fitted, else normalised; moved to ``device`` first. Taught in notebook ``00_setup_and_data``."""
        x = x.to(device) if device is not None else x
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.zca is not None:  # the paper whitens the [0, 1] pixels: no normalisation before
            return self.zca.transform(x)
        mean, std = self._stats(x)
        return (x - mean) / std

    def deprocess(self, x: Tensor) -> Tensor:
        """Network input -> displayable images in [0, 1]. Taught in notebook ``00_setup_and_data``."""
        x = x if x.is_floating_point() else x.float()
        if self.zca is not None:
            return self.zca.inverse(x).clamp(0.0, 1.0)
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def _split_tensors(self, split: str, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        dev = torch.device(device) if device is not None else images.device
        if dev.type == "cuda" and dev.index is None:  # "cuda" and "cuda:0" share one entry
            dev = torch.device("cuda", torch.cuda.current_device())
        key, stats = (split, str(dev)), (self.mean, self.std)
        hit = self._tensor_cache.get(key)
        if hit is None or hit[0] is not images or hit[1] is not self.zca or hit[2] != stats:  # new images, ZCA or stats
            hit = self._tensor_cache[key] = (images, self.zca, stats, self.preprocess(images, dev), labels.to(dev))
        return hit[3], hit[4]

    def train_tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """The whole train split preprocessed, and its labels (kept per device)."""
        return self._split_tensors("train", device)

    def test_tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """The whole test split preprocessed, and its labels (kept per device)."""
        return self._split_tensors("test", device)

    def describe(self) -> dict[str, Any]:
        """JSON-able metadata: name, classes, sizes, normalisation, ZCA and any ``source`` (no tensors)."""
        zca = None if self.zca is None else {"eps": self.zca.eps, "recipe": ZCA_RECIPE,
                                             "fingerprint": self.zca.fitted_on or self.zca.fingerprint()}
        return {"name": self.name, "classes": list(self.classes), "num_classes": self.num_classes,
                "image_shape": [int(s) for s in self.train_images.shape[1:]],
                "train_size": int(self.train_images.shape[0]), "test_size": int(self.test_images.shape[0]),
                "mean": list(self.mean), "std": list(self.std), "zca": zca, "digits": self.digits,
                **({"source": dict(self.source)} if self.source else {})}


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W] scaled to [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats needs uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}.")
    # a histogram of the 256 levels per channel gives exact statistics, fast and in little memory
    counts = torch.stack([torch.bincount(channel.flatten(), minlength=256) for channel in images.unbind(1)]).double()
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean = (counts * levels).sum(1) / counts.sum(1)
    std = ((counts * (levels - mean[:, None]) ** 2).sum(1) / counts.sum(1)).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


Loader = Callable[..., ImageData]
_LOADERS: dict[str, tuple[str, Loader, bool]] = {}  # key: (name, loader, serves every name it starts)


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str, *, prefix: bool = False, aliases: tuple[str, ...] = ()) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(name, root, *, download) -> ImageData`` under ``name`` and ``aliases``
    (any case, ``-`` or ``_``); with ``prefix=True``, for every name that starts so (the longest prefix wins)."""
    def decorate(loader: Loader) -> Loader:
        _LOADERS.update({_key(n): (name, loader, prefix) for n in (name, *aliases)})
        return loader
    return decorate


def dataset_names() -> list[str]:
    """The registered names: exact names, then prefixes written as ``prefix...``."""
    exact = sorted({n for n, _, prefix in _LOADERS.values() if not prefix})
    return exact + sorted(f"{n}PATH" if n == "folder:" else f"{n}..." for n, _, prefix in _LOADERS.values() if prefix)


def load_dataset(name: str, root: str | Path | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load a dataset by name (see the module docstring). Taught in notebook ``00_setup_and_data``.

    ``root``: the data root (else ``$MTT_DATA_ROOT``, else ``<kit>/data``); ``zca=True`` fits the paper's ZCA
    (eps 0.1, cached in ``<root>/.cache``); ``download=True`` (or ``MTT_DOWNLOAD=1``) lets torchvision download."""
    matches = [k for k, (_, _, prefix) in _LOADERS.items() if k == _key(name) or prefix and _key(name).startswith(k)]
    if not matches:
        known = ", ".join(n for n in dataset_names() if n != "folder:PATH")
        raise ValueError(f"unknown dataset {name!r}. Known names: {known}; or 'folder:PATH' for any folder "
                         "holding train/<class>/<image> and test/<class>/<image>.")
    canonical, loader, prefix = _LOADERS[max(matches, key=len)]  # an exact name, else the longest prefix
    download = download or os.environ.get("MTT_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")
    data = loader(name.strip() if prefix else canonical, root := data_root(root), download=download)
    if zca:
        data.zca = _fit_zca(data, EMBEDDED_CACHE_DIR if data.name == EMBEDDED_DATASET else root / ".cache")
    return data


def _fit_zca(data: ImageData, cache_dir: Path) -> ZCA:
    # the pixels and the recipe decide the whitening, not the loader: no mean or std in the key
    digest = hashlib.sha256(f"zca-v1-{ZCA_RECIPE}-{ZCA_EPS!r}".encode())
    digest.update(np.ascontiguousarray(data.train_images.cpu().numpy()).data)
    fingerprint = digest.hexdigest()[:20]
    content = cached(cache_dir, f"{data.name}-zca", fingerprint,
                     lambda: {"zca": ZCA.fit(data.train_images.float() / 255.0, eps=ZCA_EPS).state_dict()},
                     lambda content: ZCA.from_state_dict(content["zca"]))
    zca = ZCA.from_state_dict(content["zca"])
    zca.fitted_on = fingerprint  # describe() names the ZCA by this, free of BLAS round-off
    return zca


def load_image_folder(path: str | Path, *, name: str | None = None, cache_dir: str | Path | None = None) -> ImageData:
    """An ImageFolder tree ``path/{train,test}/<class>/<image>``: classes are the sorted folder names, mean and
    std those of the train split; ``cache_dir`` caches the decoded tensors (:func:`mttlib.folders.read_splits`)."""
    classes, splits = scan_image_folder(path := Path(path).expanduser())
    tensors = read_splits(name := name or f"folder:{path}", splits, cache_dir)
    mean, std = channel_stats(tensors["train_images"])
    return ImageData(name=name, classes=classes, mean=mean, std=std, **tensors)


@register_dataset("folder:", prefix=True)
def _load_folder(name: str, root: Path, *, download: bool = False) -> ImageData:
    if not (spec := name[len("folder:"):]):
        raise ValueError("'folder:' needs a path, e.g. 'folder:~/datasets/flowers'.")
    path = Path(spec).expanduser()
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path  # a relative PATH may also be a folder inside the data root
    return load_image_folder(path, name=name, cache_dir=root / ".cache")


@register_dataset(EMBEDDED_DATASET, aliases=("cifar10mini",))
def _load_embedded(name: str, root: Path, *, download: bool = False) -> ImageData:
    if not EMBEDDED_DIR.is_dir():
        raise FileNotFoundError(f"the embedded dataset is missing from {EMBEDDED_DIR}. Restore it from the repository, "
                                "or rebuild it with scripts/build_embedded_data.py from cifar10-jpg.tar.gz.")
    return load_image_folder(EMBEDDED_DIR, name=EMBEDDED_DATASET, cache_dir=EMBEDDED_CACHE_DIR)


_MNIST_FILES = tuple(f"{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1"))
# name: (folder in <root>/<name>, files it needs, how to get them by hand, torchvision class, mean, std, digits)
_TORCHVISION: dict[str, tuple[str, tuple[str, ...], str, str, tuple[float, ...], tuple[float, ...], bool]] = {
    "cifar10": ("cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
                "unpack cifar-10-python.tar.gz into {base}", "CIFAR10", (0.4914, 0.4822, 0.4465),
                (0.2023, 0.1994, 0.2010), False),
    "cifar100": ("cifar-100-python", ("train", "test", "meta"), "unpack cifar-100-python.tar.gz into {base}",
                 "CIFAR100", (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), False),
    "mnist": ("MNIST/raw", _MNIST_FILES, "gunzip MNIST's .gz files into {folder}", "MNIST", (0.1307,), (0.3081,), True),
    "fashion_mnist": ("FashionMNIST/raw", _MNIST_FILES, "gunzip Fashion-MNIST's .gz files into {folder}",
                      "FashionMNIST", (0.2861,), (0.3530,), False),
    "svhn": (".", ("train_32x32.mat", "test_32x32.mat"), "put the SVHN format-2 files (cropped digits) into {folder}",
             "SVHN", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), True),
}


def _torchvision_splits(name: str, base: Path, download: bool = False) -> list[Any]:
    import torchvision.datasets as tvd
    splits = [{"split": split} if name == "svhn" else {"train": split == "train"} for split in ("train", "test")]
    try:
        return [getattr(tvd, _TORCHVISION[name][3])(str(base), download=download, **split) for split in splits]
    except ImportError as err:  # SVHN's .mat files need scipy
        raise ImportError(f"loading {name} needs {err.name}: pip install {err.name}") from err


def _ensure_files(name: str, root: Path, download: bool) -> Path:
    subfolder, files, hint = _TORCHVISION[name][:3]
    folder = (base := root / name) / subfolder
    if not (missing := [f for f in files if not (folder / f).is_file()]):
        return base
    if not download:
        raise FileNotFoundError(f"{name} is not on disk: {folder} lacks {', '.join(missing)}. Either "
                                f"{hint.format(base=base, folder=folder)}, or let the kit download it: load_dataset("
                                f"{name!r}, download=True) or MTT_DOWNLOAD=1 (needs internet). The data root {root} "
                                "comes from the root argument (--data-root), else $MTT_DATA_ROOT, else <kit>/data.")
    try:
        _torchvision_splits(name, base, download=True)
    except Exception as err:  # network errors come in many types
        if isinstance(err, ImportError):
            raise
        raise RuntimeError(f"downloading {name} into {base} failed ({type(err).__name__}: {err}). Check the "
                           "internet connection, or download the files by hand and put them there.") from err
    return base


def _tv_data(name: str, classes: list[str], train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> ImageData:
    mean, std, digits = _TORCHVISION[name][4:]
    return ImageData(name, train[0].contiguous(), train[1].long(), test[0].contiguous(), test[1].long(), classes,
                     mean, std, digits=digits)


@register_dataset("mnist")
@register_dataset("fashion_mnist", aliases=("fashionmnist",))
@register_dataset("svhn")
def _load_torchvision(name: str, root: Path, *, download: bool = False) -> ImageData:
    train, test = _torchvision_splits(name, _ensure_files(name, root, download))
    if name == "svhn":  # numpy [N, 3, 32, 32] and .labels
        return _tv_data(name, [str(i) for i in range(10)], *((torch.from_numpy(d.data), torch.from_numpy(d.labels))
                                                             for d in (train, test)))
    return _tv_data(name, list(train.classes), *((d.data.unsqueeze(1), d.targets) for d in (train, test)))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a tampered batch file cannot run code."""
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module.replace("numpy._core", "numpy.core"), name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")


def _read_batch(path: Path, convert: Callable[[dict[str, Any]], Any]) -> Any:
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
        # Python 2 pickles give str keys, Python 3 ones may give bytes keys
        return convert({k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()})
    except Exception as err:
        raise CorruptFileError(f"cannot read {path} as a CIFAR python batch ({type(err).__name__}: {err}). "
                               "Delete the folder and download the dataset again.") from err


def _read_cifar(folder: Path, files: list[str], label_key: str) -> tuple[Tensor, Tensor]:
    def arrays(batch: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:  # rows are 1024 R, 1024 G, 1024 B values
        return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(batch[label_key], np.int64)
    images, labels = zip(*(_read_batch(folder / file, arrays) for file in files))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


# The kit reads CIFAR batches itself, not with torchvision: its reader admits only numpy arrays
# (no arbitrary unpickling) and skips the md5 check of every file at every load.
@register_dataset("cifar10", aliases=("cifar-10",))
@register_dataset("cifar100", aliases=("cifar-100",))
def _load_cifar(name: str, root: Path, *, download: bool = False) -> ImageData:
    folder = _ensure_files(name, root, download) / _TORCHVISION[name][0]
    ten = name == "cifar10"
    key, meta = ("labels", "batches.meta") if ten else ("fine_labels", "meta")
    names = _read_batch(folder / meta, lambda batch: batch[key.replace("labels", "label_names")])
    return _tv_data(name, [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in names],
                    _read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"], key),
                    _read_cifar(folder, ["test_batch" if ten else "test"], key))

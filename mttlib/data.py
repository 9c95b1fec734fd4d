"""Datasets as plain tensors: images, labels, class names, normalisation and ZCA whitening.

``load_dataset(name)`` returns an :class:`ImageData` whose images stay ``uint8`` [N, C, H, W]
in memory (so a large dataset costs one byte per pixel); :meth:`ImageData.preprocess` turns a
batch into the float32 tensors a network sees: ``/255``, then either normalise by the
per-channel mean and std or, when a :class:`mttlib.zca.ZCA` is fitted, ZCA-whiten the [0, 1]
pixels without normalising (the paper's recipe, see :mod:`mttlib.zca`).

Names
-----
``cifar10-mini``
    the kit's embedded subset of CIFAR-10 (500 train + 100 test JPEG images per class, in
    ``<kit>/data/cifar10-mini``): works offline, nothing to download.
``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``svhn``
    the torchvision datasets, read from ``<data root>/<name>``; the data root is the ``root``
    argument, else ``$MTT_DATA_ROOT``, else ``<kit>/data`` (see :mod:`mttlib.io`). They are
    downloaded only when asked (``download=True`` or ``MTT_DOWNLOAD=1``).
``folder:PATH``
    any ImageFolder tree ``PATH/{train,test}/<class>/<image>``; a relative PATH is looked up
    in the current folder, then in the data root.

Adding a dataset
----------------
Write a loader ``fn(name: str, root: Path, *, download: bool) -> ImageData`` (``name`` is the
full name asked for, ``root`` the resolved data root) and register it, for one exact name or
for every name that starts with a prefix::

    from mttlib.data import register_dataset, load_image_folder

    @register_dataset("flowers", aliases=("oxford-flowers",))
    def _flowers(name, root, *, download=False):
        return load_image_folder(root / "flowers", name=name, cache_dir=root / ".cache")

    @register_dataset("flowers:", prefix=True)       # flowers:64, flowers:128, ...
    def _flowers_at(name, root, *, download=False): ...

and add the module's name to :data:`DATASET_MODULES` so that ``load_dataset`` imports it the
first time a name it does not know is asked for (:mod:`mttlib.imagenet` registers
``tiny-imagenet`` and ``imagenet:<subset>`` this way).

ZCA
---
``load_dataset(name, zca=True)`` fits :class:`mttlib.zca.ZCA` (eps 0.1) on the train images
scaled to [0, 1], as the paper's code does, and caches it under ``<root>/.cache``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from mttlib.io import CorruptFileError, atomic_save, safe_load
from mttlib.io import KIT_ROOT, data_root
from mttlib.zca import RECIPE as ZCA_RECIPE
from mttlib.zca import ZCA, ZCA_EPS

__all__ = [
    "EMBEDDED_DATASET", "ImageData", "load_dataset", "register_dataset", "dataset_names",
    "DATASET_MODULES", "load_image_folder", "channel_stats",
]

EMBEDDED_DATASET = "cifar10-mini"
EMBEDDED_DIR = KIT_ROOT / "data" / EMBEDDED_DATASET
EMBEDDED_CACHE_DIR = KIT_ROOT / "data" / ".cache"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_CACHE_VERSION = 1  # bump when the cache layout changes: old files are then rebuilt


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------

@dataclass
class ImageData:
    """A classification dataset held as uint8 images [N, C, H, W] and int64 labels.

    ``mean``/``std`` are per-channel statistics of the pixels scaled to [0, 1]; ``zca``, when
    fitted, whitens the [0, 1] pixels instead of normalising them (the paper's recipe); ``digits`` marks MNIST and SVHN, where
    a flipped image is no longer the same class (augmentation skips flips).
    """

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
    _tensor_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(f"{split}_images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}.")
            if labels.shape != (images.shape[0],):
                raise ValueError(f"{split}_labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}.")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels}), got {self.mean} and {self.std}.")
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)

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
        from mttlib.augment import DIGIT_STRATEGY, DSA_STRATEGY
        return DIGIT_STRATEGY if self.digits else DSA_STRATEGY

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (self.channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def preprocess(self, x: Tensor, device: torch.device | str | None = None) -> Tensor:
        """Images -> network input (float32): /255, then ZCA-whiten if a ZCA is fitted, else
        normalise by the per-channel mean and std.

        ``x`` is uint8 [N, C, H, W] or [C, H, W]; a floating-point ``x`` is taken to be in
        [0, 1] already. The uint8 tensor is moved to ``device`` before conversion (4x less
        to copy).
        """
        if device is not None:
            x = x.to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.zca is not None:  # the paper whitens the [0, 1] pixels: no normalisation before
            return self.zca.transform(x)
        mean, std = self._stats(x)
        return (x - mean) / std

    def deprocess(self, x: Tensor) -> Tensor:
        """Network input -> displayable images in [0, 1]: un-ZCA or un-normalise, then clamp."""
        x = x if x.is_floating_point() else x.float()
        if self.zca is not None:
            return self.zca.inverse(x).clamp(0.0, 1.0)
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def _split_tensors(self, split: str, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        dev = torch.device(device) if device is not None else images.device
        if dev.type == "cuda" and dev.index is None:  # "cuda" and "cuda:0" share one cache entry
            dev = torch.device("cuda", torch.cuda.current_device())
        key = (split, str(dev))
        cached = self._tensor_cache.get(key)
        # the cache is valid only for the very same images, statistics and ZCA object
        if cached is not None and cached[0] is images and cached[1] is self.zca and cached[2] == (self.mean, self.std):
            return cached[3], cached[4]
        x = self.preprocess(images, dev)
        y = labels.to(dev)
        self._tensor_cache[key] = (images, self.zca, (self.mean, self.std), x, y)
        return x, y

    def train_tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """The whole train split preprocessed, and its labels (cached per device)."""
        return self._split_tensors("train", device)

    def test_tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """The whole test split preprocessed, and its labels (cached per device)."""
        return self._split_tensors("test", device)

    def clear_cache(self) -> None:
        """Forget the preprocessed float tensors kept by :meth:`train_tensors`/:meth:`test_tensors`."""
        self._tensor_cache.clear()

    def describe(self) -> dict[str, Any]:
        """JSON-able metadata: name, classes, sizes, normalisation and ZCA (no tensors)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "image_shape": [int(s) for s in self.train_images.shape[1:]],
            "train_size": int(self.train_images.shape[0]),
            "test_size": int(self.test_images.shape[0]),
            "mean": list(self.mean),
            "std": list(self.std),
            "zca": None if self.zca is None else {"eps": self.zca.eps, "recipe": ZCA_RECIPE,
                                                  "fingerprint": self.zca.fitted_on or self.zca.fingerprint()},
            "digits": self.digits,
        }


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W] scaled to [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats needs uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}.")
    # a histogram of the 256 levels per channel gives exact statistics, fast and in little memory
    c = images.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.float64)
    for chunk in images.split(max(1, (1 << 24) // images[0].numel())):  # about 16 MB a chunk
        for channel in range(c):
            counts[channel] += torch.bincount(chunk[:, channel].reshape(-1), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(1)
    mean = (counts * levels).sum(1) / total
    std = ((counts * (levels - mean[:, None]) ** 2).sum(1) / total).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

Loader = Callable[..., ImageData]
_EXACT: dict[str, tuple[str, Loader]] = {}
_PREFIX: dict[str, Loader] = {}

#: Modules that register more datasets; imported the first time an unknown name is asked for.
DATASET_MODULES: list[str] = ["mttlib.imagenet"]


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str, *, prefix: bool = False, aliases: tuple[str, ...] = ()) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(name, root, *, download) -> ImageData`` under ``name``.

    Exact names match case-insensitively with ``-`` and ``_`` interchangeable; ``aliases``
    are more exact names. With ``prefix=True`` the loader serves every name that starts with
    ``name`` (e.g. ``"folder:"``) and receives the full name.
    """
    def decorate(loader: Loader) -> Loader:
        if prefix:
            _PREFIX[name.lower()] = loader
        else:
            for n in (name, *aliases):
                _EXACT[_key(n)] = (name, loader)
        return loader
    return decorate


def dataset_names() -> list[str]:
    """The registered names: exact names, then prefixes written as ``prefix...``."""
    _import_plugins()
    exact = sorted({canonical for canonical, _ in _EXACT.values()})
    return exact + [f"{p}PATH" if p == "folder:" else f"{p}..." for p in sorted(_PREFIX)]


def _import_plugins() -> None:
    for module in DATASET_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a plugin that is there but broken must not fail silently
                raise


def _resolve(name: str) -> tuple[str, Loader] | None:
    if _key(name) in _EXACT:
        return _EXACT[_key(name)]
    for prefix in sorted(_PREFIX, key=len, reverse=True):  # the longest matching prefix wins
        loader = _PREFIX[prefix]
        if name.strip().lower().startswith(prefix):
            return name, loader
    return None


def _download_wanted(download: bool) -> bool:
    return bool(download) or os.environ.get("MTT_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")


def load_dataset(name: str, root: str | Path | None = None, *, zca: bool = False,
                 download: bool = False) -> ImageData:
    """Load a dataset by name (see the module docstring for the names).

    ``root`` is the data root (else ``$MTT_DATA_ROOT``, else ``<kit>/data``); ``zca=True`` fits
    ZCA whitening (eps 0.1) on the train split scaled to [0, 1], as the paper does (cached
    under ``<root>/.cache``; see :mod:`mttlib.zca`);
    ``download=True`` (or ``MTT_DOWNLOAD=1``) lets torchvision datasets download what is missing.
    """
    resolved = _resolve(name)
    if resolved is None:
        _import_plugins()
        resolved = _resolve(name)
    if resolved is None:
        raise ValueError(
            f"unknown dataset {name!r}. Known names: "
            f"{', '.join(n for n in dataset_names() if n != 'folder:PATH')}; "
            "or 'folder:PATH' for any folder holding train/<class>/<image> and test/<class>/<image>."
        )
    canonical, loader = resolved
    root_path = data_root(root)
    data = loader(canonical, root_path, download=_download_wanted(download))
    if zca:
        cache_dir = EMBEDDED_CACHE_DIR if data.name == EMBEDDED_DATASET else root_path / ".cache"
        data.zca = _fit_zca_cached(data, ZCA_EPS, cache_dir)
    return data


# --------------------------------------------------------------------------------------------
# Caches: files under a git-ignored .cache folder, rebuilt silently when unreadable
# --------------------------------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:60] or "dataset"


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    try:
        content = safe_load(path)
    except (FileNotFoundError, CorruptFileError):
        return None
    if not isinstance(content, dict) or content.get("fingerprint") != fingerprint:
        return None
    return content


def _write_cache(path: Path, content: dict) -> None:
    """Save ``content`` to ``path`` (named ``<stem>-<fingerprint>.pt``), removing older versions."""
    stem = path.name.rsplit("-", 1)[0]
    pattern = re.compile(re.escape(stem) + r"-[0-9a-f]{20}\.pt")
    try:
        for stale in path.parent.glob("*.pt"):
            if stale != path and pattern.fullmatch(stale.name):
                stale.unlink()
        atomic_save(content, path)
    except OSError:
        pass  # a read-only checkout just decodes again next time


def _fit_zca_cached(data: ImageData, eps: float, cache_dir: Path | None) -> ZCA:
    # the pixels and the recipe decide the whitening, not the loader: no mean or std in the key
    digest = hashlib.sha256(f"zca-v{_CACHE_VERSION}-{ZCA_RECIPE}-{eps!r}".encode())
    digest.update(np.ascontiguousarray(data.train_images.cpu().numpy()).data)
    fingerprint = digest.hexdigest()[:20]
    path = None if cache_dir is None else Path(cache_dir) / f"{_slug(data.name)}-zca-{fingerprint}.pt"
    if path is not None:
        cached = _read_cache(path, fingerprint)
        if cached is not None:
            try:
                zca = ZCA.from_state_dict(cached["zca"])
                zca.fitted_on = fingerprint
                return zca
            except (KeyError, ValueError, TypeError, AttributeError):
                pass
    zca = ZCA.fit(data.train_images.float() / 255.0, eps=eps)
    zca.fitted_on = fingerprint
    if path is not None:
        _write_cache(path, {"fingerprint": fingerprint, "zca": zca.state_dict()})
    return zca


# --------------------------------------------------------------------------------------------
# ImageFolder trees (folder:PATH and the embedded subset)
# --------------------------------------------------------------------------------------------

def _visible_dirs(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def _image_files(path: Path) -> list[Path]:
    with os.scandir(path) as entries:  # scandir knows file types without one stat per file
        return sorted(Path(e.path) for e in entries
                      if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS))


def _scan_folder(path: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Check the layout of an ImageFolder tree; return classes and (file, label) per split."""
    hint = f"An ImageFolder dataset needs {path}/train/<class>/<image> and {path}/test/<class>/<image>."
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder {path} does not exist. {hint}")
    splits: dict[str, list[Path]] = {}
    for split in ("train", "test"):
        if not (path / split).is_dir():
            found = ", ".join(p.name for p in _visible_dirs(path)) or "nothing"
            raise FileNotFoundError(f"{path} has no {split}/ folder (found: {found}). {hint}")
        splits[split] = _visible_dirs(path / split)
    names = {split: [d.name for d in dirs] for split, dirs in splits.items()}
    if not names["train"]:
        raise ValueError(f"{path}/train holds no class folders. {hint}")
    if names["train"] != names["test"]:
        only_train = sorted(set(names["train"]) - set(names["test"]))
        only_test = sorted(set(names["test"]) - set(names["train"]))
        raise ValueError(
            f"train and test classes of {path} differ: only in train: {only_train}, only in "
            f"test: {only_test}. Give every class a folder (with images) in both splits."
        )
    classes = names["train"]
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, dirs in splits.items():
        files[split] = []
        for label, directory in enumerate(dirs):
            images = _image_files(directory)
            if not images:
                raise ValueError(
                    f"class folder {directory} holds no images (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)}). Add images or remove the class from both splits."
                )
            files[split] += [(f, label) for f in images]
    return classes, files


def _folder_fingerprint(path: Path, files: dict[str, list[tuple[Path, int]]]) -> str:
    digest = hashlib.sha256(f"folder-v{_CACHE_VERSION}-{path.resolve()}".encode())
    for split in ("train", "test"):
        for file, label in files[split]:
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode(file: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(file) as image:
            if image.mode in ("L", "1"):
                return np.asarray(image.convert("L"))[None]
            return np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode {file} as an image ({err}). Remove or replace the file.") from err


def _decode_all(files: list[Path]) -> list[np.ndarray]:
    if len(files) < 256:
        return [_decode(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        return list(pool.map(_decode, files))


def _stack(arrays: list[np.ndarray], rgb: bool) -> Tensor:
    if rgb:
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 3 if rgb else 1, 0, 0, dtype=torch.uint8)


def _decode_folder(path: Path, files: dict[str, list[tuple[Path, int]]]) -> dict[str, Tensor]:
    arrays = {split: _decode_all([f for f, _ in files[split]]) for split in ("train", "test")}
    sizes = {}
    for split in ("train", "test"):
        for (file, _), array in zip(files[split], arrays[split]):
            sizes.setdefault(array.shape[1:], file)
    if len(sizes) > 1:
        (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
        raise ValueError(
            f"images in {path} differ in size: {file_a} is {size_a[1]}x{size_a[0]} but {file_b} is "
            f"{size_b[1]}x{size_b[0]}. Resize all images to one size first (e.g. with PIL's "
            "Image.resize), since the kit stacks them into one tensor."
        )
    # grayscale stays 1 channel only when every image is grayscale; otherwise all become RGB
    rgb = any(a.shape[0] == 3 for split in arrays for a in arrays[split])
    out = {}
    for split in ("train", "test"):
        out[f"{split}_images"] = _stack(arrays[split], rgb)
        out[f"{split}_labels"] = torch.tensor([label for _, label in files[split]], dtype=torch.int64)
    return out


def load_image_folder(path: str | Path, *, name: str | None = None, cache_dir: str | Path | None = None,
                      digits: bool = False) -> ImageData:
    """Load an ImageFolder tree ``path/{train,test}/<class>/<image>`` as uint8 tensors.

    Classes are the sorted folder names (the same in both splits); images are decoded with
    PIL as RGB (grayscale stays one channel only when every image is grayscale; alpha is
    dropped) and must all have the same size. Mean and std come from the train split. With
    ``cache_dir``, the decoded tensors are kept in ``cache_dir/<name>-data-<fingerprint>.pt``, where
    the fingerprint covers the file names, sizes and modification times.
    """
    path = Path(path).expanduser()
    classes, files = _scan_folder(path)
    name = name or f"folder:{path}"
    tensors = None
    cache_path = None
    if cache_dir is not None:
        fingerprint = _folder_fingerprint(path, files)
        cache_path = Path(cache_dir) / f"{_slug(name)}-data-{fingerprint}.pt"
        cached = _read_cache(cache_path, fingerprint)
        if cached is not None and _cache_matches(cached, classes, files):
            tensors = {k: cached[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    if tensors is None:
        tensors = _decode_folder(path, files)
        if cache_path is not None:
            _write_cache(cache_path, {"fingerprint": fingerprint, "classes": list(classes), **tensors})
    mean, std = channel_stats(tensors["train_images"])
    return ImageData(name=name, classes=list(classes), mean=mean, std=std, digits=digits, **tensors)


def _cache_matches(cached: dict, classes: list[str], files: dict[str, list[tuple[Path, int]]]) -> bool:
    try:
        if cached["classes"] != list(classes):
            return False
        for split in ("train", "test"):
            images, labels = cached[f"{split}_images"], cached[f"{split}_labels"]
            if (not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4
                    or images.shape[0] != len(files[split]) or labels.dtype != torch.int64
                    or labels.tolist() != [label for _, label in files[split]]):
                return False
    except (KeyError, AttributeError, TypeError):
        return False
    return True


@register_dataset("folder:", prefix=True)
def _load_folder(name: str, root: Path, *, download: bool = False) -> ImageData:
    spec = name[len("folder:"):]
    if not spec:
        raise ValueError("'folder:' needs a path, e.g. 'folder:~/datasets/flowers'.")
    path = Path(spec).expanduser()
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path  # a relative PATH may also be a folder inside the data root
    return load_image_folder(path, name=name, cache_dir=root / ".cache")


@register_dataset(EMBEDDED_DATASET, aliases=("cifar10mini",))
def _load_embedded(name: str, root: Path, *, download: bool = False) -> ImageData:
    if not EMBEDDED_DIR.is_dir():
        raise FileNotFoundError(
            f"the embedded dataset is missing from {EMBEDDED_DIR}. It ships with the kit: restore it "
            "from the repository, or rebuild it with scripts/build_embedded_data.py from the CIFAR-10 "
            "JPEG archive (cifar10-jpg.tar.gz)."
        )
    return load_image_folder(EMBEDDED_DIR, name=EMBEDDED_DATASET, cache_dir=EMBEDDED_CACHE_DIR)


# --------------------------------------------------------------------------------------------
# torchvision datasets
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _TorchvisionSpec:
    folder: str              # where the files go, relative to <root>/<name>
    files: tuple[str, ...]   # what must be there
    hint: str                # how to fill the folder by hand ({base}: <root>/<name>)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    digits: bool = False


_TORCHVISION = {
    "cifar10": _TorchvisionSpec(
        "cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                "data_batch_5", "test_batch", "batches.meta"),
        "unpack cifar-10-python.tar.gz into {base}", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": _TorchvisionSpec(
        "cifar-100-python", ("train", "test", "meta"),
        "unpack cifar-100-python.tar.gz into {base}", (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": _TorchvisionSpec(
        "MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                      "t10k-labels-idx1-ubyte"),
        "gunzip the four MNIST .gz files into {folder}", (0.1307,), (0.3081,), digits=True),
    "fashion_mnist": _TorchvisionSpec(
        "FashionMNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                             "t10k-labels-idx1-ubyte"),
        "gunzip the four Fashion-MNIST .gz files into {folder}", (0.2861,), (0.3530,)),
    "svhn": _TorchvisionSpec(
        ".", ("train_32x32.mat", "test_32x32.mat"), "put the SVHN format-2 files (cropped digits) into {folder}",
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), digits=True),
}


def _ensure_files(name: str, root: Path, download: bool) -> Path:
    """The dataset's folder under ``root``; downloads into it or explains what to put there."""
    spec = _TORCHVISION[name]
    base = root / name
    folder = (base / spec.folder) if spec.folder != "." else base
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if not missing:
        return base
    if not download:
        raise FileNotFoundError(
            f"{name} is not on disk: {folder} lacks {', '.join(missing)}"
            f"{'' if len(missing) == len(spec.files) else ' (of ' + ', '.join(spec.files) + ')'}. "
            f"Either {spec.hint.format(base=base, folder=folder)}, or let the kit download it: "
            f"load_dataset({name!r}, download=True) or MTT_DOWNLOAD=1 (needs internet). The data "
            f"root {root} comes from the root argument (--data-root), else $MTT_DATA_ROOT, else <kit>/data."
        )
    import torchvision.datasets as tvd

    try:
        if name == "svhn":
            for split in ("train", "test"):
                tvd.SVHN(str(base), split=split, download=True)
        else:
            cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST,
                   "fashion_mnist": tvd.FashionMNIST}[name]
            cls(str(base), train=True, download=True)
            cls(str(base), train=False, download=True)
    except ImportError as err:
        raise ImportError(f"loading {name} needs {err.name}: pip install {err.name}") from err
    except Exception as err:  # network errors come in many types
        raise RuntimeError(
            f"downloading {name} into {base} failed ({type(err).__name__}: {err}). Check the internet "
            "connection, or download the files by hand and put them there."
        ) from err
    return base


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a tampered batch file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")


def _read_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except Exception as err:
        raise CorruptFileError(
            f"cannot read {path} as a CIFAR python batch ({type(err).__name__}: {err}). Delete the "
            "folder and download the dataset again."
        ) from err
    if not isinstance(content, dict):
        raise CorruptFileError(f"{path} is not a CIFAR python batch (no dict inside). Download the dataset again.")
    # files pickled by Python 2 give str keys, files written by Python 3 may give bytes keys
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def _text(values: list) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _read_cifar(folder: Path, files: list[str], label_key: str) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for file in files:
        batch = _read_batch(folder / file)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32))  # rows are 1024 R, 1024 G, 1024 B values
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError) as err:
            raise CorruptFileError(f"{folder / file} lacks usable 'data'/'{label_key}' entries ({err}). "
                                   "Download the dataset again.") from err
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _tv_data(name: str, classes: list[str], train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> ImageData:
    spec = _TORCHVISION[name]
    return ImageData(name=name, train_images=train[0].contiguous(), train_labels=train[1].long(),
                     test_images=test[0].contiguous(), test_labels=test[1].long(), classes=classes,
                     mean=spec.mean, std=spec.std, digits=spec.digits)


# CIFAR batches are read by the kit itself rather than by torchvision.datasets.CIFAR10: the
# reader admits only numpy arrays (no arbitrary unpickling) and skips torchvision's md5 check
# of every file at every load (it is done once, at download).
@register_dataset("cifar10", aliases=("cifar-10",))
def _load_cifar10(name: str, root: Path, *, download: bool = False) -> ImageData:
    folder = _ensure_files(name, root, download) / _TORCHVISION[name].folder
    train = _read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], "labels")
    test = _read_cifar(folder, ["test_batch"], "labels")
    classes = _text(_read_batch(folder / "batches.meta")["label_names"])
    return _tv_data(name, classes, train, test)


@register_dataset("cifar100", aliases=("cifar-100",))
def _load_cifar100(name: str, root: Path, *, download: bool = False) -> ImageData:
    folder = _ensure_files(name, root, download) / _TORCHVISION[name].folder
    train = _read_cifar(folder, ["train"], "fine_labels")
    test = _read_cifar(folder, ["test"], "fine_labels")
    classes = _text(_read_batch(folder / "meta")["fine_label_names"])
    return _tv_data(name, classes, train, test)


def _load_mnist_like(name: str, root: Path, download: bool, cls_name: str) -> ImageData:
    import torchvision.datasets as tvd

    base = _ensure_files(name, root, download)
    cls = getattr(tvd, cls_name)
    train, test = cls(str(base), train=True), cls(str(base), train=False)
    return _tv_data(name, list(train.classes), (train.data.unsqueeze(1), train.targets),
                    (test.data.unsqueeze(1), test.targets))


@register_dataset("mnist")
def _load_mnist(name: str, root: Path, *, download: bool = False) -> ImageData:
    return _load_mnist_like(name, root, download, "MNIST")


@register_dataset("fashion_mnist", aliases=("fashionmnist",))
def _load_fashion_mnist(name: str, root: Path, *, download: bool = False) -> ImageData:
    return _load_mnist_like(name, root, download, "FashionMNIST")


@register_dataset("svhn")
def _load_svhn(name: str, root: Path, *, download: bool = False) -> ImageData:
    import torchvision.datasets as tvd

    base = _ensure_files(name, root, download)
    try:
        train, test = tvd.SVHN(str(base), split="train"), tvd.SVHN(str(base), split="test")
    except ImportError as err:
        raise ImportError("SVHN's .mat files are read with scipy: pip install scipy") from err
    except RuntimeError as err:
        raise CorruptFileError(f"the SVHN files in {base} fail torchvision's md5 check ({err}). "
                               "Delete them and download again.") from err
    return _tv_data(name, [str(i) for i in range(10)],
                    (torch.from_numpy(train.data), torch.from_numpy(train.labels)),
                    (torch.from_numpy(test.data), torch.from_numpy(test.labels)))

"""The MTT paper's ImageNet subsets, Tiny ImageNet, and an offline stand-in for the subsets.

Taught in notebook ``03_imagenet_subsets``. Names for :func:`mttlib.data.load_dataset`: ``imagenet:<subset>``, with
options as in ``imagenet:imagewoof:resize=center_crop,size=64,per_class=100`` (:func:`load_imagenet_subset`),
``tiny-imagenet[:per_class=N]`` (:func:`load_tiny_imagenet`) and ``cifar10-mini@<size>``, a stand-in that is *not*
ImageNet (:func:`standin_subset`). ImageNet holds ``train/<wnid>/*.JPEG`` and ``val/``, in ``val/<wnid>/`` folders or
flat with a ground truth (:func:`val_wnids`; ``scripts/prepare_imagenet_val.py`` sorts it). Images stay uint8 (13,000 at
128 px take 640 MB), normalised with ImageNet's mean and std as in the reference."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mttlib.data import EMBEDDED_DATASET, ImageData, load_dataset, register_dataset
from mttlib.folders import Split, image_files, read_splits, subfolders
from mttlib.io import CorruptFileError, data_root, safe_load

__all__ = ["IMAGENET_SUBSETS", "MTT_PAPER_ACCURACY", "RESIZE_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "TINY_MEAN",
           "TINY_STD", "SubsetClass", "imagenet_wnids", "imagenet_class_names", "subset_classes", "imagenet_path",
           "tiny_imagenet_path", "find_imagenet", "resize_image", "val_wnids", "parse_imagenet_name",
           "load_imagenet_subset", "load_tiny_imagenet", "STANDIN_NOTE", "standin_name", "parse_standin_name",
           "standin_subset", "is_standin", "load_subset_or_standin"]

WNIDS_FILE = Path(__file__).resolve().with_name("imagenet_wnids.txt")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_MEAN, TINY_STD = IMAGENET_MEAN, IMAGENET_STD  # as the reference normalises Tiny ImageNet
IMAGE_SIZE = 128

#: The paper's subsets, in its tables' order: ILSVRC-2012 class indices in label order. Taught in notebook
#: ``03_imagenet_subsets``.
IMAGENET_SUBSETS: dict[str, tuple[int, ...]] = {
    "imagenette": (0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
    "imagewoof": (193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
    "imagefruit": (953, 954, 949, 950, 951, 957, 952, 945, 943, 948),
    "imagemeow": (281, 282, 283, 284, 285, 291, 292, 290, 289, 287),
    "imagesquawk": (84, 130, 88, 144, 145, 22, 96, 9, 100, 89),
    "imageyellow": (309, 986, 954, 951, 987, 779, 599, 291, 72, 11),
    "imageblub": (392, 393, 33, 397, 6, 107, 327, 390, 108, 122),
}

#: MTT's test accuracy in percent, ``(mean, std)`` per ipc, ConvNetD5, 128 px, from the table of Cazenavette
#: et al., CVPR 2022 (ImageBlub is not in it). Taught in notebook ``03_imagenet_subsets``.
MTT_PAPER_ACCURACY: dict[str, dict[int, tuple[float, float]]] = {
    "imagenette": {1: (47.7, 0.9), 10: (63.0, 1.3)}, "imagewoof": {1: (28.6, 0.8), 10: (35.8, 1.8)},
    "imagefruit": {1: (26.6, 0.8), 10: (40.3, 1.3)}, "imageyellow": {1: (45.2, 0.8), 10: (60.0, 1.5)},
    "imagemeow": {1: (30.7, 1.6), 10: (40.4, 2.2)}, "imagesquawk": {1: (39.4, 1.5), 10: (52.3, 1.0)},
}

#: How an image of any shape becomes ``size`` x ``size``.
RESIZE_MODES: dict[str, str] = {
    "paper": ("stretch to size x size, aspect not preserved: bilinear, no antialiasing, as the reference's "
              "transforms.Resize((128, 128)) on a tensor with torchvision 0.12 (its CenterCrop(128) after it "
              "changes nothing); rounded to uint8"),
    "center_crop": "aspect preserved: shorter side to size (bilinear, antialiased), then the central size x size",
}
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
STANDIN_NOTE = "stand-in for an ImageNet subset"  #: ends every stand-in's name, so none passes for ImageNet


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 wnids, sorted; position ``i`` is class index ``i``."""
    return tuple(WNIDS_FILE.read_text().split())


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order, as torchvision ships them."""
    from torchvision.models import ResNet18_Weights
    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class SubsetClass(NamedTuple):
    """One class of a subset: its label there, its ImageNet index, wnid and name."""
    label: int
    index: int
    wnid: str
    name: str


def subset_classes(subset: str) -> list[SubsetClass]:
    """The classes of a paper subset in label order. Taught in notebook ``03_imagenet_subsets``."""
    if (key := subset.strip().lower()) not in IMAGENET_SUBSETS:
        raise ValueError(f"unknown ImageNet subset {subset!r}; choose one of {', '.join(IMAGENET_SUBSETS)}.")
    wnids, names = imagenet_wnids(), imagenet_class_names()
    return [SubsetClass(label, i, wnids[i], names[i]) for label, i in enumerate(IMAGENET_SUBSETS[key])]


def imagenet_path(root: str | Path | None = None) -> Path:
    """Where ImageNet is looked for: ``$MTT_IMAGENET``, else ``<data root>/imagenet``."""
    return Path(os.environ.get("MTT_IMAGENET") or data_root(root) / "imagenet").expanduser()


def tiny_imagenet_path(root: str | Path | None = None) -> Path:
    """Where Tiny ImageNet is looked for: ``$MTT_TINY_IMAGENET``, else ``<data root>/tiny-imagenet-200``."""
    return Path(os.environ.get("MTT_TINY_IMAGENET") or data_root(root) / "tiny-imagenet-200").expanduser()


def _tree(base: Path) -> Path | None:
    return next((t for t in (base, base / "ILSVRC" / "Data" / "CLS-LOC") if (t / "train").is_dir()), None)


def find_imagenet(root: str | Path | None = None) -> Path | None:
    """The ImageNet tree under :func:`imagenet_path`, or None. Taught in notebook ``03_imagenet_subsets``."""
    return _tree(imagenet_path(root))


def _check(value: Any, what: str, minimum: int = 1, optional: bool = True) -> None:
    if not (optional and value is None) and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{what} must be an integer of at least {minimum}{' or None' * optional}, got {value!r}.")


def _check_resize(mode: str, size: Any) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}.")
    _check(size, "the image size", optional=False)


def _options(name: str, text: str, defaults: dict[str, Any], example: str) -> dict[str, Any]:
    """The ``key=value`` options in ``text`` (separated by commas or colons) over ``defaults``."""
    parsed = dict(defaults)
    for option in filter(None, (o.strip() for o in re.split(r"[,:]", text))):
        key, eq, value = (p.strip().lower() for p in option.replace("-", "_").partition("="))
        valid = value in RESIZE_MODES if key == "resize" else re.fullmatch(r"[1-9]\d*", value)
        if not eq or key not in defaults or not valid:
            known = ", ".join("resize=paper|center_crop" if k == "resize" else f"{k}=N" for k in defaults)
            raise ValueError(f"cannot read option {option!r} of {name!r}; the options are {known}, e.g. {example!r}.")
        parsed[key] = value if key == "resize" else int(value)
    return parsed


def parse_imagenet_name(name: str) -> dict[str, Any]:
    """``imagenet:<subset>[:key=value,...]`` as keyword arguments of :func:`load_imagenet_subset`."""
    subset, _, text = re.sub(r"(?i)^imagenet:", "", name.strip()).partition(":")
    options = _options(name, text, {"resize": "paper", "size": IMAGE_SIZE, "per_class": None},
                       "imagenet:imagewoof:resize=center_crop,size=64")
    return {"subset": subset.strip().lower(), "image_size": options.pop("size"), **options}


def resize_image(image: Tensor, size: int, mode: str = "paper") -> Tensor:
    """Resize uint8 images [C, H, W] or [N, C, H, W] to ``size`` x ``size`` (see :data:`RESIZE_MODES`)."""
    _check_resize(mode, size)
    if tuple(image.shape[-2:]) == (size, size):
        return image.clone()
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    if mode == "paper":
        out = F.interpolate(batch.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        import torchvision.transforms.functional as TF
        out = TF.center_crop(TF.resize(batch, [size], antialias=True), [size, size])
    return out if image.dim() == 4 else out[0]


def _read(name: str, splits: dict[str, Split], classes: list[str], source: dict[str, Any], size: int, mode: str,
          cache_dir: str | Path | None, progress: bool) -> ImageData:
    """``splits`` decoded, resized and cached, as ImageData normalised with the ImageNet mean and std."""
    tensors = read_splits(name, splits, cache_dir, transform=lambda x: resize_image(x.expand(3, -1, -1), size, mode),
                          settings=f"{mode}-{size}", progress=progress)
    return ImageData(name=name, classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, source=source, **tensors)


def _no_images(cls: SubsetClass, folder: Path, split: str, where: str = "") -> Exception:
    error = ValueError if folder.is_dir() else FileNotFoundError
    return error(f"ImageNet class {cls.index} '{cls.name}' ({cls.wnid}) has no {split} images: expected "
                 f"{folder}/*.JPEG{where}. Is the tree complete?")


def val_wnids(tree: Path, base: Path | None = None) -> tuple[dict[Path, str], Path]:
    """The wnid of each image in a flat ``tree/val/``, and the file that said so: Kaggle's
    ``LOC_val_solution.csv`` (rows ``ILSVRC2012_val_00000001,n01751748 x0 y0 ...``) or torchvision's
    ``meta.bin`` (``(wnid_to_classes, val_wnids)``), in ``tree/val``, ``tree`` or ``base``."""
    images, folders = image_files(tree / "val"), [f for f in dict.fromkeys((tree / "val", tree, base)) if f]
    for path in (f / "LOC_val_solution.csv" for f in folders if (f / "LOC_val_solution.csv").is_file()):
        rows = [line.split(",", 1) for line in path.read_text(errors="replace").splitlines()]
        if not rows or [h.strip() for h in rows[0]] != ["ImageId", "PredictionString"]:
            raise CorruptFileError(f"{path} does not start with Kaggle's header 'ImageId,PredictionString'.")
        labels = {row[0].strip(): row[1].split()[0] for row in rows[1:] if len(row) == 2 and row[1].split()}
        return {f: labels[f.stem] for f in images if f.stem in labels}, path
    for path in (f / "meta.bin" for f in folders if (f / "meta.bin").is_file()):
        meta = safe_load(path)
        if not (isinstance(meta, (tuple, list)) and len(meta) == 2 and isinstance(meta[1], (list, tuple))):
            raise CorruptFileError(f"{path} is not torchvision's ImageNet meta file (wnid_to_classes, val_wnids).")
        numbers = {f: int(m.group(1)) for f in images if (m := re.fullmatch(r"ILSVRC2012_val_(\d{8})", f.stem))}
        return {f: meta[1][n - 1] for f, n in numbers.items() if 0 < n <= len(meta[1])}, path
    raise FileNotFoundError(
        f"{tree / 'val'} holds {len(images)} images in one folder and no ground truth was found. Supported: val/<wnid>/"
        f" folders, or Kaggle's LOC_val_solution.csv or torchvision's meta.bin in {', '.join(map(str, folders))}. With"
        " the devkit (ILSVRC2012_devkit_t12.tar.gz), scripts/prepare_imagenet_val.py sorts val/ into class folders.")


def _val_files(tree: Path, base: Path, classes: list[SubsetClass]) -> Split:
    val, where = tree / "val", ""
    if not val.is_dir():
        raise FileNotFoundError(f"the ImageNet tree {tree} has train/ but no val/ folder (scripts/"
                                "prepare_imagenet_val.py unpacks ILSVRC2012_img_val.tar).")
    if any(re.fullmatch(r"n\d{8}", d.name) for d in subfolders(val)):  # sorted into wnid folders
        files = [(f, c.label) for c in classes if (val / c.wnid).is_dir() for f in image_files(val / c.wnid)]
    else:
        wnids, ground_truth = val_wnids(tree, base)
        label_of, where = {c.wnid: c.label for c in classes}, f" (labels from {ground_truth})"
        files = sorted(((f, label_of[w]) for f, w in wnids.items() if w in label_of), key=lambda p: (p[1], p[0].name))
    if missing := [c for c in classes if c.label not in {label for _, label in files}]:
        raise _no_images(missing[0], val if where else val / missing[0].wnid, "val", where)
    return files


def load_imagenet_subset(subset: str, path: str | Path | None = None, *, resize: str = "paper",
                         image_size: int = IMAGE_SIZE, per_class: int | None = None, progress: bool = True,
                         cache_dir: str | Path | None = None, name: str | None = None) -> ImageData:
    """One of the paper's ImageNet subsets as uint8 tensors (train = train, test = val); label ``c`` is
    the ``c``-th class of :data:`IMAGENET_SUBSETS`. ``path`` defaults to :func:`imagenet_path`; ``per_class``
    keeps the first N train images of each class; ``cache_dir`` caches the decoded tensors."""
    _check_resize(resize, image_size)
    _check(per_class, "per_class")
    classes, subset = subset_classes(subset), subset.strip().lower()
    base = Path(path).expanduser() if path not in (None, "") else imagenet_path()
    if (tree := _tree(base)) is None:
        raise FileNotFoundError(
            f"no ImageNet tree at {base}: expected {base}/train/<wnid>/*.JPEG and {base}/val/. Set MTT_IMAGENET="
            "/path/to/imagenet or put (or link) it at <data root>/imagenet; unpack the ILSVRC2012 archives with scripts"
            "/prepare_imagenet_val.py. ImageNet cannot be downloaded automatically (it needs an image-net.org login).")
    train: Split = []
    for cls in classes:
        if not (folder := tree / "train" / cls.wnid).is_dir() or not (images := image_files(folder)):
            raise _no_images(cls, folder, "train")
        train += [(f, cls.label) for f in images[:per_class]]
    options = (("resize", resize, "paper"), ("size", image_size, IMAGE_SIZE), ("per_class", per_class, None))
    parts = [f"{key}={value}" for key, value, default in options if value != default]
    name = name or f"imagenet:{subset}" + (":" + ",".join(parts) if parts else "")
    source = {"dataset": "ILSVRC-2012", "subset": subset, "class_indices": [c.index for c in classes],
              "wnids": [c.wnid for c in classes], "resize": resize, "resize_rule": RESIZE_MODES[resize],
              "image_size": image_size, "train_per_class": per_class}
    splits = {"train": train, "test": _val_files(tree, base, classes)}
    return _read(name, splits, [c.name for c in classes], source, image_size, resize, cache_dir, progress)


def _tiny_val(val: Path, label_of: dict[str, int]) -> Split:
    annotations, files = val / "val_annotations.txt", []
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations} is missing: Tiny ImageNet's val labels come from it "
                                "(file<TAB>wnid<TAB>box). Unpack tiny-imagenet-200.zip again.")
    lines = annotations.read_text(encoding="utf-8").splitlines()
    for number, line in ((n, line) for n, line in enumerate(lines, 1) if line.strip()):
        file, wnid = (line.split("\t") + [""])[:2]
        if wnid not in label_of or not (val / "images" / file).is_file():
            raise CorruptFileError(f"{annotations} line {number} ({line.strip()!r}) does not name an image in "
                                   f"{val / 'images'} and a wnid of wnids.txt (tab-separated: file, wnid, box).")
        files.append((val / "images" / file, label_of[wnid]))
    return sorted(files, key=lambda p: (p[1], p[0].name))


def load_tiny_imagenet(path: str | Path | None = None, *, per_class: int | None = None, progress: bool = True,
                       cache_dir: str | Path | None = None, name: str | None = None,
                       download: bool = False) -> ImageData:
    """Tiny ImageNet (64x64, 200 classes, the sorted wnids) as uint8 tensors; test is the val split. ``path`` is
    ``tiny-imagenet-200`` as the zip unpacks (default :func:`tiny_imagenet_path`); ``download=True`` fetches the zip
    when it is missing. The rest as in :func:`load_imagenet_subset`."""
    _check(per_class, "per_class")
    folder = Path(path).expanduser() if path not in (None, "") else tiny_imagenet_path()
    if not (folder / "wnids.txt").is_file() and download:
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(TINY_URL, str(folder.parent), filename="tiny-imagenet-200.zip")
    if not (folder / "wnids.txt").is_file():
        raise FileNotFoundError(f"no Tiny ImageNet at {folder} (wnids.txt is missing). Unpack tiny-imagenet-200.zip "
                                f"({TINY_URL}) into the data root, set MTT_TINY_IMAGENET=/path/to/tiny-imagenet-200, "
                                "or load it with download=True.")
    wnids = sorted(set((folder / "wnids.txt").read_text().split()))
    train: Split = []
    for label, wnid in enumerate(wnids):
        if not (images_in := folder / "train" / wnid / "images").is_dir() or not (images := image_files(images_in)):
            raise FileNotFoundError(f"Tiny ImageNet class {wnid} has no train images: expected {images_in}/*.JPEG.")
        train += [(f, label) for f in images[:per_class]]
    lines = (folder / "words.txt").read_text(errors="replace").splitlines() if (folder / "words.txt").is_file() else []
    words = dict(line.partition("\t")[::2] for line in lines)  # wnid -> "name, other names"
    name = name or ("tiny-imagenet" + (f":per_class={per_class}" if per_class is not None else ""))
    source = {"dataset": "Tiny ImageNet", "wnids": wnids, "resize": "none", "image_size": 64,
              "resize_rule": "none: the images are 64x64 already (any other size is stretched as in 'paper')",
              "train_per_class": per_class}
    splits = {"train": train, "test": _tiny_val(folder / "val", {w: i for i, w in enumerate(wnids)})}
    classes = [words.get(w, w).split(",")[0].strip() or w for w in wnids]
    return _read(name, splits, classes, source, 64, "paper", cache_dir, progress)  # TINY_MEAN is IMAGENET_MEAN


def standin_name(image_size: int = IMAGE_SIZE, per_class: int | None = None, test_per_class: int | None = None) -> str:
    """The registry name of a stand-in, e.g. ``'cifar10-mini@128:per_class=50 (stand-in for an ImageNet subset)'``."""
    options = [f"{k}={v}" for k, v in (("per_class", per_class), ("test_per_class", test_per_class)) if v is not None]
    return f"{EMBEDDED_DATASET}@{image_size}" + (":" + ",".join(options) if options else "") + f" ({STANDIN_NOTE})"


def parse_standin_name(name: str) -> dict[str, Any]:
    """``cifar10-mini@<size>[:per_class=N,test_per_class=M][ (note)]`` as arguments of :func:`standin_subset`."""
    head, _, text = name.split("(")[0].strip().partition(":")
    if not (match := re.fullmatch(r"cifar10[-_]?mini@(\d+)", head.strip(), re.IGNORECASE)):
        raise ValueError(f"cannot read {name!r} as a stand-in name; write 'cifar10-mini@<size>' with an optional "
                         "':per_class=N,test_per_class=M', e.g. 'cifar10-mini@128:per_class=50'.")
    return {"image_size": int(match.group(1)), **_options(name, text, {"per_class": None, "test_per_class": None},
                                                    "cifar10-mini@128:per_class=50,test_per_class=20")}


def standin_subset(image_size: int = IMAGE_SIZE, per_class: int | None = None, root: str | Path | None = None, *,
                   test_per_class: int | None = None) -> ImageData:
    """An offline stand-in for an ImageNet subset: the embedded CIFAR-10 images upsampled to ``image_size``.

    Blurred 32 px photos of CIFAR-10's classes: it runs the 128 px pipeline offline, but its accuracies say nothing
    about ImageNet. ``per_class``/``test_per_class`` keep N per class. Taught in notebook ``03_imagenet_subsets``."""
    _check(image_size, "the stand-in's size (it upsamples 32 px images; for 32 px use cifar10-mini)", 32, False)
    _check(per_class, "per_class")
    _check(test_per_class, "test_per_class")
    base, tensors = load_dataset(EMBEDDED_DATASET, root), {}
    for split, n in (("train", per_class), ("test", test_per_class)):
        labels = getattr(base, f"{split}_labels")
        index = torch.cat([(labels == c).nonzero().flatten()[:n] for c in range(base.num_classes)])
        # 256 images at a time bound the float copy (256 x 3 x 128 x 128 x 4 bytes = 50 MB)
        chunks = getattr(base, f"{split}_images")[index].split(256)
        tensors[f"{split}_images"] = torch.cat([resize_image(chunk, image_size) for chunk in chunks])
        tensors[f"{split}_labels"] = labels[index]
    source = {"dataset": EMBEDDED_DATASET, "standin": True, "standin_for": "an ImageNet subset",
              "resize": "bilinear upsampling, no antialiasing, rounded to uint8", "source_size": base.image_size,
              "note": "CIFAR-10 photos and class names, not ImageNet; normalised with cifar10-mini's statistics",
              "train_per_class": per_class, "test_per_class": test_per_class, "image_size": image_size}
    return ImageData(name=standin_name(image_size, per_class, test_per_class), classes=list(base.classes),
                     mean=base.mean, std=base.std, source=source, **tensors)


def is_standin(data: ImageData) -> bool:
    """True when ``data`` is the offline stand-in, not ImageNet. Taught in notebook ``03_imagenet_subsets``."""
    return bool(data.source.get("standin", False))


def load_subset_or_standin(subset: str, root: str | Path | None = None, *, per_class: int | None = None,
                           test_per_class: int | None = None, image_size: int = IMAGE_SIZE,
                           progress: bool = True) -> ImageData:
    """The paper subset when :func:`find_imagenet` finds a tree, else :func:`standin_subset` (``test_per_class``
    is for it only); a tree that is incomplete raises, never falls back. Taught in notebook ``03_imagenet_subsets``."""
    subset_classes(subset)
    if find_imagenet(root) is None:
        return standin_subset(image_size, per_class, root, test_per_class=test_per_class)
    data = load_imagenet_subset(subset, imagenet_path(root), image_size=image_size, per_class=per_class,
                                cache_dir=data_root(root) / ".cache", progress=progress)
    data.source = {**data.source, "standin": False}
    return data


@register_dataset("imagenet:", prefix=True)
def _load_imagenet(name: str, root: Path, *, download: bool = False) -> ImageData:
    return load_imagenet_subset(path=imagenet_path(root), cache_dir=root / ".cache", name=name.strip(),
                                **parse_imagenet_name(name))


@register_dataset("tiny-imagenet", aliases=("tiny", "tinyimagenet", "tiny-imagenet-200"))
@register_dataset("tiny-imagenet:", prefix=True)
def _load_tiny(name: str, root: Path, *, download: bool = False) -> ImageData:
    options = _options(name, name.partition(":")[2], {"per_class": None}, "tiny-imagenet:per_class=50")
    return load_tiny_imagenet(tiny_imagenet_path(root), per_class=options["per_class"], cache_dir=root / ".cache",
                              name=name.strip(), download=download)


@register_dataset(f"{EMBEDDED_DATASET}@", prefix=True)
def _load_standin(name: str, root: Path, *, download: bool = False) -> ImageData:
    return standin_subset(root=root, **parse_standin_name(name))

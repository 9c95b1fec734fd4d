"""ImageNet subsets and Tiny ImageNet: class tables, folder layouts, labels, resizing, caches.

The trees are built in tmp_path from the kit's embedded CIFAR-10 images, resized with PIL and
saved as JPEG under real wnid folder names; every loaded image is compared with a direct PIL
decode of the file it should come from.
"""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mttlib.folders as folders
import mttlib.imagenet as inet
from mttlib.data import load_dataset
from mttlib.io import KIT_ROOT

CIFAR = KIT_ROOT / "data" / "cifar10-mini" / "train"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MTT_IMAGENET", raising=False)
    monkeypatch.delenv("MTT_TINY_IMAGENET", raising=False)
    monkeypatch.delenv("MTT_DATA_ROOT", raising=False)


def _sources() -> list[Path]:
    """Embedded CIFAR images, taken round-robin over its ten classes."""
    per_class = [sorted(d.glob("*.jpg"))[:12] for d in sorted(CIFAR.iterdir())]
    return [files[i] for i in range(12) for files in per_class]


def _write(source: Path, target: Path, size: tuple[int, int]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").resize(size, Image.BICUBIC).save(target, "JPEG", quality=90)


def _pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def _imagenet_tree(base: Path, subset: str, val_layout: str, n_train: int = 3, n_val: int = 2,
                   size: int = 128) -> dict[str, dict[str, list[Path]]]:
    """ImageNet-style tree for ``subset`` (+ one class outside it); returns split -> wnid -> files."""
    wnids = [c.wnid for c in inet.subset_classes(subset)] + ["n01443537"]  # goldfish: not in most subsets
    sources = iter(_sources())
    files: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    for wnid in wnids:
        files["train"][wnid] = [base / "train" / wnid / f"{wnid}_{i}.JPEG" for i in range(n_train)]
        for target in files["train"][wnid]:
            _write(next(sources), target, (size, size))
    val_items = [(wnid, next(sources)) for wnid in wnids for _ in range(n_val)]
    random.Random(0).shuffle(val_items)  # flat val numbering mixes the classes
    ground_truth = []
    for number, (wnid, source) in enumerate(val_items, 1):
        stem = f"ILSVRC2012_val_{number:08d}"
        target = base / "val" / (wnid if val_layout == "folders" else "") / f"{stem}.JPEG"
        _write(source, target, (size, size))
        files["val"].setdefault(wnid, []).append(target)
        ground_truth.append((stem, wnid))
    if val_layout == "kaggle":
        rows = [f"{stem},{wnid} 10 12 90 100 {wnid} 3 4 50 60" for stem, wnid in ground_truth]
        (base / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    elif val_layout == "meta":
        wnid_to_classes = {w: (w,) for w in wnids}
        torch.save((wnid_to_classes, [wnid for _, wnid in ground_truth]), base / "meta.bin")
    return files


def _expected(subset: str, files: dict[str, list[Path]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels in the paper's class order, decoded directly with PIL."""
    images, labels = [], []
    for cls in inet.subset_classes(subset):
        for path in sorted(files[cls.wnid], key=lambda p: p.name):
            images.append(_pixels(path))
            labels.append(cls.label)
    return torch.stack(images), torch.tensor(labels)


# ------------------------------------------------------------------------------------------
# class tables


def test_wnid_table_is_the_sorted_ilsvrc_list_read_next_to_the_module():
    assert inet.WNIDS_FILE.parent == Path(inet.__file__).resolve().parent
    wnids = inet.imagenet_wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    names = inet.imagenet_class_names()
    known = {0: ("n01440764", "tench"), 1: ("n01443537", "goldfish"), 217: ("n02102040", "English springer"),
             482: ("n02979186", "cassette player"), 701: ("n03888257", "parachute"),
             999: ("n15075141", "toilet tissue")}
    for index, (wnid, name) in known.items():
        assert wnids[index] == wnid and names[index] == name


def test_subsets_follow_the_paper_order():
    assert set(inet.IMAGENET_SUBSETS) == {"imagenette", "imagewoof", "imagemeow", "imagesquawk",
                                          "imagefruit", "imageyellow", "imageblub"}
    assert all(len(v) == 10 and len(set(v)) == 10 for v in inet.IMAGENET_SUBSETS.values())
    woof = inet.subset_classes("imagewoof")
    assert [c.index for c in woof] == [193, 182, 258, 162, 155, 167, 159, 273, 207, 229]
    assert (woof[0].label, woof[0].wnid, woof[0].name) == (0, "n02096294", "Australian terrier")
    # fast.ai's Imagenette and Imagewoof folders name the same ten wnids
    assert {c.wnid for c in inet.subset_classes("imagenette")} == {
        "n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042",
        "n03425413", "n03445777", "n03888257"}
    assert {c.wnid for c in woof} == {
        "n02086240", "n02087394", "n02088364", "n02089973", "n02093754", "n02096294", "n02099601",
        "n02105641", "n02111889", "n02115641"}
    assert [c.name for c in inet.subset_classes("imagemeow")][:3] == ["tabby", "tiger cat", "Persian cat"]
    with pytest.raises(ValueError, match="imagewoof"):
        inet.subset_classes("imagebark")


def test_name_options_are_parsed_and_checked():
    assert inet.parse_imagenet_name("imagenet:ImageWoof") == {
        "subset": "imagewoof", "resize": "paper", "image_size": 128, "per_class": None}
    assert inet.parse_imagenet_name("imagenet:imagefruit:resize=center_crop,size=64,per_class=5") == {
        "subset": "imagefruit", "resize": "center_crop", "image_size": 64, "per_class": 5}
    for bad in ("imagenet:imagewoof:crop", "imagenet:imagewoof:resize=squash", "imagenet:imagewoof:size=0"):
        with pytest.raises(ValueError):
            inet.parse_imagenet_name(bad)


# ------------------------------------------------------------------------------------------
# resizing


def test_paper_resize_matches_the_reference_transform():
    import torchvision.transforms as T

    x = torch.randint(0, 256, (3, 90, 150), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = inet.resize_image(x, 128, "paper")
    assert ours.shape == (3, 128, 128) and ours.dtype == torch.uint8
    # the reference: ToTensor, Normalize, then Resize((128, 128)) on the tensor (no antialiasing)
    mean = torch.tensor(inet.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(inet.IMAGENET_STD).view(3, 1, 1)
    reference = T.Resize((128, 128), antialias=False)((x.float() / 255 - mean) / std)
    kit = (ours.float() / 255 - mean) / std
    assert (kit - reference).abs().max() <= 0.5 / 255 / min(inet.IMAGENET_STD) + 1e-5


def test_center_crop_keeps_the_aspect_and_the_middle():
    x = torch.zeros(3, 50, 100, dtype=torch.uint8)
    x[0, :, :25] = 255
    x[0, :, 75:] = 255  # red side bands
    x[2, :, 25:75] = 255  # blue square in the middle
    crop = inet.resize_image(x, 32, "center_crop")
    stretch = inet.resize_image(x, 32, "paper")
    assert crop.shape == stretch.shape == (3, 32, 32)
    inner = crop[:, :, 2:-2].int()
    assert (inner[2] > 240).all() and (inner[0] < 15).all()  # only the blue middle is left
    assert (stretch[0, :, 0] > 240).all() and (stretch[2, :, 16] > 240).all()  # bands squeezed in
    batch = inet.resize_image(torch.stack([x, x]), 16, "center_crop")
    assert batch.shape == (2, 3, 16, 16) and torch.equal(batch[0], inet.resize_image(x, 16, "center_crop"))


# ------------------------------------------------------------------------------------------
# ImageNet trees


@pytest.mark.parametrize("val_layout", ["folders", "kaggle", "meta"])
def test_imagenet_subset_labels_follow_the_paper_order(tmp_path, val_layout):
    files = _imagenet_tree(tmp_path / "imagenet", "imagewoof", val_layout)
    data = inet.load_imagenet_subset("imagewoof", tmp_path / "imagenet", progress=False)
    for split, folder in (("train", "train"), ("test", "val")):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        want_images, want_labels = _expected("imagewoof", files[folder])
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 128, 128)
        assert torch.equal(labels, want_labels)  # goldfish (outside the subset) is left out
        assert torch.equal(images, want_images)  # same size on disk: no resampling
    assert data.train_labels[0] == 0 and data.classes[0] == "Australian terrier"
    assert data.num_classes == 10 and data.test_images.shape[0] == 20
    assert data.mean == inet.IMAGENET_MEAN and data.std == inet.IMAGENET_STD
    assert data.name == "imagenet:imagewoof"
    described = data.describe()
    assert described["source"]["class_indices"][0] == 193 and described["source"]["resize"] == "paper"


def test_torchvision_reads_the_meta_file_layout_the_same_way(tmp_path):
    from torchvision.datasets.imagenet import load_meta_file

    files = _imagenet_tree(tmp_path, "imagenette", "meta", n_train=1, n_val=1)
    _, val_wnids = load_meta_file(str(tmp_path))
    by_number = {int(p.stem[-8:]): w for w, paths in files["val"].items() for p in paths}
    assert val_wnids == [by_number[i] for i in range(1, len(by_number) + 1)]


def test_preprocess_turns_uint8_into_normalised_float(tmp_path):
    _imagenet_tree(tmp_path, "imagenette", "folders", n_train=2, n_val=1)
    data = inet.load_imagenet_subset("imagenette", tmp_path, progress=False)
    x = data.preprocess(data.train_images[:4])
    assert x.dtype == torch.float32 and x.shape == (4, 3, 128, 128)
    mean = torch.tensor(inet.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(inet.IMAGENET_STD).view(1, 3, 1, 1)
    manual = (data.train_images[:4].double() / 255 - mean.double()) / std.double()
    torch.testing.assert_close(x.double(), manual, rtol=0, atol=1e-5)


@pytest.mark.parametrize("resize", ["paper", "center_crop"])
def test_both_resize_modes_give_the_requested_size(tmp_path, resize):
    files = _imagenet_tree(tmp_path, "imagemeow", "folders", n_train=2, n_val=1, size=96)
    # a non-square image, as most ImageNet photos are
    _write(_sources()[0], tmp_path / "train" / "n02123045" / "n02123045_9.JPEG", (120, 80))
    data = inet.load_imagenet_subset("imagemeow", tmp_path, resize=resize, image_size=64,
                                     progress=False)
    assert data.train_images.shape == (21, 3, 64, 64) and data.test_images.shape == (10, 3, 64, 64)
    wide = _pixels(tmp_path / "train" / "n02123045" / "n02123045_9.JPEG")
    assert torch.equal(data.train_images[2], inet.resize_image(wide, 64, resize))
    first = sorted(files["train"]["n02123045"], key=lambda p: p.name)[0]
    assert torch.equal(data.train_images[0], inet.resize_image(_pixels(first), 64, resize))
    assert data.describe()["source"]["resize"] == resize
    assert data.describe()["source"]["resize_rule"] == inet.RESIZE_MODES[resize]


def test_missing_wnid_folder_is_named(tmp_path):
    _imagenet_tree(tmp_path, "imagewoof", "folders", n_train=1, n_val=1)
    for f in (tmp_path / "train" / "n02096294").iterdir():
        f.unlink()
    (tmp_path / "train" / "n02096294").rmdir()
    with pytest.raises(FileNotFoundError) as err:
        inet.load_imagenet_subset("imagewoof", tmp_path, progress=False)
    message = str(err.value)
    assert "n02096294" in message and "Australian terrier" in message and str(tmp_path / "train") in message


def test_flat_val_without_ground_truth_says_what_is_supported(tmp_path):
    _imagenet_tree(tmp_path, "imagenette", "kaggle", n_train=1, n_val=1)
    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv"):
        inet.load_imagenet_subset("imagenette", tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="MTT_IMAGENET"):
        inet.load_imagenet_subset("imagenette", tmp_path / "nowhere", progress=False)


def test_cache_round_trip_and_rebuild(tmp_path, monkeypatch):
    _imagenet_tree(tmp_path / "tree", "imagesquawk", "folders", n_train=2, n_val=1)
    cache = tmp_path / "cache"
    first = inet.load_imagenet_subset("imagesquawk", tmp_path / "tree", cache_dir=cache, progress=False)
    written = list(cache.glob("*.pt"))
    assert len(written) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is current")

    monkeypatch.setattr(folders, "_decode", no_decoding)
    again = inet.load_imagenet_subset("imagesquawk", tmp_path / "tree", cache_dir=cache, progress=False)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, key), getattr(again, key))
    assert again.classes == first.classes
    # a new file changes the fingerprint: the tree is decoded again
    _write(_sources()[0], tmp_path / "tree" / "train" / "n01806143" / "n01806143_7.JPEG", (128, 128))
    with pytest.raises(AssertionError, match="decoded although"):
        inet.load_imagenet_subset("imagesquawk", tmp_path / "tree", cache_dir=cache, progress=False)
    monkeypatch.undo()
    inet.load_imagenet_subset("imagesquawk", tmp_path / "tree", cache_dir=cache, progress=False)
    assert [p.name for p in cache.glob("*.pt")] != [p.name for p in written]  # old version replaced
    assert len(list(cache.glob("*.pt"))) == 1


def _prepare_script():
    spec = importlib.util.spec_from_file_location("prepare_imagenet_val", KIT_ROOT / "scripts" / "prepare_imagenet_val.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("val_layout", ["kaggle", "meta"])
def test_script_sorts_a_flat_val_split_into_wnid_folders(tmp_path, val_layout):
    files = _imagenet_tree(tmp_path, "imagewoof", val_layout, n_train=1, n_val=2)
    flat = inet.load_imagenet_subset("imagewoof", tmp_path, progress=False)
    script = _prepare_script()
    assert script.main([str(tmp_path), "--dry-run"]) == 0
    assert len(list((tmp_path / "val").glob("*.JPEG"))) == 22  # nothing moved
    assert script.main([str(tmp_path)]) == 0
    assert not list((tmp_path / "val").glob("*.JPEG"))
    for wnid, paths in files["val"].items():  # goldfish, outside the subset, is sorted too
        assert sorted(p.name for p in (tmp_path / "val" / wnid).iterdir()) == sorted(p.name for p in paths)
    for truth in ("LOC_val_solution.csv", "meta.bin"):
        (tmp_path / truth).unlink(missing_ok=True)
    folders_layout = inet.load_imagenet_subset("imagewoof", tmp_path, progress=False)
    assert torch.equal(folders_layout.test_images, flat.test_images)
    assert torch.equal(folders_layout.test_labels, flat.test_labels)
    assert script.sort_val(tmp_path) == 0  # nothing left to sort


def test_registry_finds_the_tree_under_the_data_root_or_the_environment(tmp_path, monkeypatch):
    _imagenet_tree(tmp_path / "imagenet", "imagewoof", "kaggle", n_train=3, n_val=1)
    data = load_dataset("imagenet:imagewoof:per_class=2", root=tmp_path)
    assert data.name == "imagenet:imagewoof:per_class=2" and data.train_images.shape[0] == 20
    assert list((tmp_path / ".cache").glob("*.pt"))
    monkeypatch.setenv("MTT_IMAGENET", str(tmp_path / "imagenet"))
    data = load_dataset("imagenet:imagewoof:size=32", root=tmp_path / "elsewhere")
    assert data.train_images.shape == (30, 3, 32, 32) and data.image_size == 32


# ------------------------------------------------------------------------------------------
# Tiny ImageNet

TINY_WNIDS = ["n04067472", "n01443537", "n02124075", "n09193705"]  # unsorted, as in wnids.txt
TINY_WORDS = {"n04067472": "reel", "n01443537": "goldfish, Carassius auratus",
              "n02124075": "Egyptian cat", "n09193705": "alp", "n00001740": "entity"}


def _tiny_tree(base: Path, n_train: int = 3, n_val: int = 2) -> dict[str, dict[str, list[Path]]]:
    sources = iter(_sources())
    (base / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in TINY_WORDS.items()))
    files: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    for wnid in TINY_WNIDS:
        files["train"][wnid] = [base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG" for i in range(n_train)]
        for target in files["train"][wnid]:
            _write(next(sources), target, (64, 64))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    items = [(wnid, next(sources)) for wnid in TINY_WNIDS for _ in range(n_val)]
    random.Random(1).shuffle(items)
    lines = []
    for k, (wnid, source) in enumerate(items):
        target = base / "val" / "images" / f"val_{k}.JPEG"
        _write(source, target, (64, 64))
        files["val"].setdefault(wnid, []).append(target)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t3\t60\t62")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "test" / "images").mkdir(parents=True)
    return files


def test_tiny_imagenet_as_distributed(tmp_path):
    files = _tiny_tree(tmp_path / "tiny-imagenet-200")
    data = load_dataset("tiny-imagenet", root=tmp_path)
    ordered = sorted(TINY_WNIDS)
    assert data.classes == ["goldfish", "Egyptian cat", "reel", "alp"]  # sorted wnids, first words
    assert data.source["wnids"] == ordered
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (12, 3, 64, 64)
    assert data.mean == inet.TINY_MEAN and data.std == inet.TINY_STD
    for split, folder in (("train", "train"), ("test", "val")):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        want = [(_pixels(p), ordered.index(w)) for w in ordered for p in sorted(files[folder][w], key=lambda p: p.name)]
        assert labels.tolist() == [label for _, label in want]
        assert torch.equal(images, torch.stack([img for img, _ in want]))
    small = load_dataset("tiny-imagenet:per_class=1", root=tmp_path)
    assert small.train_labels.tolist() == [0, 1, 2, 3] and small.test_images.shape[0] == 8


def test_tiny_imagenet_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        inet.load_tiny_imagenet(tmp_path / "tiny-imagenet-200", progress=False)
    _tiny_tree(tmp_path / "tiny-imagenet-200", n_train=1, n_val=1)
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(Exception, match="val_annotations.txt"):
        inet.load_tiny_imagenet(tmp_path / "tiny-imagenet-200", progress=False)


# ------------------------------------------------------------------------------------------
# the offline stand-in


def _bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize [C, H, W] -> [C, size, size] with half-pixel centres, written out by hand."""
    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, None)
        lo = np.minimum(np.floor(x).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), x - lo

    ly, hy, fy = axis(image.shape[1])
    lx, hx, fx = axis(image.shape[2])
    rows = image[:, ly, :] * (1 - fy)[None, :, None] + image[:, hy, :] * fy[None, :, None]
    return rows[:, :, lx] * (1 - fx) + rows[:, :, hx] * fx


def test_standin_is_the_embedded_cifar_upsampled_and_says_so():
    data = inet.standin_subset(128, per_class=2, test_per_class=1)
    cifar_classes = sorted(d.name for d in CIFAR.iterdir() if d.is_dir())
    assert data.classes == cifar_classes  # CIFAR's names, never ImageNet's
    assert "stand-in for an ImageNet subset" in data.name and data.name.startswith("cifar10-mini@128")
    assert inet.is_standin(data) and data.describe()["source"]["standin"] is True
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (20, 3, 128, 128)
    assert data.test_images.shape == (10, 3, 128, 128)
    assert data.train_labels.tolist() == [c for c in range(10) for _ in range(2)]
    embedded = load_dataset("cifar10-mini")
    assert (data.mean, data.std) == (embedded.mean, embedded.std)
    for label in (0, 7):
        first = sorted((CIFAR / cifar_classes[label]).glob("*.jpg"))[1]  # the second image of the class
        want = np.round(_bilinear(_pixels(first).double().numpy(), 128))
        got = data.train_images[2 * label + 1].double().numpy()
        assert np.abs(got - want).max() <= 1  # float32 vs float64 may round a .5 the other way
        assert (got == want).mean() > 0.99


def test_standin_names_load_through_the_registry_and_round_trip():
    small = load_dataset("cifar10-mini@64:per_class=1,test_per_class=1")
    assert small.train_images.shape == (10, 3, 64, 64) and small.image_size == 64
    assert small.name == inet.standin_name(64, 1, 1)
    assert small.name == "cifar10-mini@64:per_class=1,test_per_class=1 (stand-in for an ImageNet subset)"
    again = load_dataset(small.name)  # the name, note included, loads the same data
    assert torch.equal(again.train_images, small.train_images) and torch.equal(again.test_labels, small.test_labels)
    assert inet.parse_standin_name(small.name) == {"image_size": 64, "per_class": 1, "test_per_class": 1}
    with pytest.raises(ValueError, match="at least 32"):
        load_dataset("cifar10-mini@16")
    with pytest.raises(ValueError, match="per_class"):
        load_dataset("cifar10-mini@128:per_klass=3")
    with pytest.raises(ValueError, match="stand-in name"):
        inet.parse_standin_name("cifar10-mini@big")


def test_subset_or_standin_uses_the_real_tree_when_there_and_never_hides_a_broken_one(tmp_path):
    offline = inet.load_subset_or_standin("imagewoof", tmp_path, per_class=1, test_per_class=1)
    assert inet.is_standin(offline) and inet.find_imagenet(tmp_path) is None
    assert offline.classes[0] == "airplane" and offline.train_images.shape == (10, 3, 128, 128)
    _imagenet_tree(tmp_path / "imagenet", "imagewoof", "folders", n_train=2, n_val=1)
    assert inet.find_imagenet(tmp_path) == tmp_path / "imagenet"
    real = inet.load_subset_or_standin("imagewoof", tmp_path, per_class=1, progress=False)
    assert not inet.is_standin(real) and real.name == "imagenet:imagewoof:per_class=1"
    assert real.classes[0] == "Australian terrier" and real.train_images.shape == (10, 3, 128, 128)
    registry = load_dataset("imagenet:imagewoof:per_class=1", root=tmp_path)
    assert torch.equal(real.train_images, registry.train_images) and torch.equal(real.test_labels, registry.test_labels)
    for f in (tmp_path / "imagenet" / "train" / "n02096294").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="n02096294"):  # an incomplete tree is an error, not a fallback
        inet.load_subset_or_standin("imagewoof", tmp_path, per_class=1, progress=False)
    with pytest.raises(ValueError, match="imagewoof"):
        inet.load_subset_or_standin("imagebark", tmp_path)


def test_paper_results_cover_the_six_subsets_of_its_table():
    assert set(inet.MTT_PAPER_ACCURACY) == set(inet.IMAGENET_SUBSETS) - {"imageblub"}
    assert inet.MTT_PAPER_ACCURACY["imagenette"] == {1: (47.7, 0.9), 10: (63.0, 1.3)}
    for subset, rows in inet.MTT_PAPER_ACCURACY.items():
        assert set(rows) == {1, 10} and rows[10][0] > rows[1][0], subset

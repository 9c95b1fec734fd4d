"""mttlib.data: the embedded subset, folder and torchvision loading, normalisation and ZCA."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import pickle
import shutil
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import mttlib.data as data_mod
from mttlib.augment import DSA
from mttlib.data import (DIGIT_STRATEGY, DSA_STRATEGY, EMBEDDED_DATASET, ImageData, channel_stats, dataset_names,
                         dsa_strategy_for, load_dataset, load_image_folder, register_dataset)
from mttlib import cli
from mttlib.io import CorruptFileError, atomic_save, safe_load
from mttlib.io import KIT_ROOT
from mttlib.zca import RECIPE, ZCA

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EMBEDDED = KIT_ROOT / "data" / "cifar10-mini"


def _build_script():
    spec = importlib.util.spec_from_file_location("build_embedded_data", KIT_ROOT / "scripts" / "build_embedded_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mini() -> ImageData:
    return load_dataset(EMBEDDED_DATASET)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MTT_DOWNLOAD", raising=False)
    monkeypatch.delenv("MTT_DATA_ROOT", raising=False)


def make_tree(root, classes=("cat", "dog"), train=3, test=2, size=None):
    """An ImageFolder tree made of embedded JPEGs (optionally resized to ``size``)."""
    for split, count in (("train", train), ("test", test)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                src = EMBEDDED / split / cls / f"{i:04d}.jpg"
                if size is None:
                    shutil.copy(src, root / split / cls / f"{i:04d}.jpg")
                else:
                    Image.open(src).resize((size, size)).save(root / split / cls / f"{i:04d}.png")
    return root


# ------------------------------------------------------------------------------ embedded set

def test_embedded_counts_shapes_and_classes(mini):
    assert mini.name == EMBEDDED_DATASET
    assert mini.train_images.shape == (5000, 3, 32, 32) and mini.test_images.shape == (1000, 3, 32, 32)
    assert mini.train_images.dtype == torch.uint8 and mini.train_labels.dtype == torch.int64
    assert mini.classes == CIFAR10_CLASSES
    assert torch.bincount(mini.train_labels).tolist() == [500] * 10
    assert torch.bincount(mini.test_labels).tolist() == [100] * 10
    assert (mini.channels, mini.image_size, mini.num_classes, mini.digits) == (3, 32, 10, False)
    assert mini.dsa_strategy == DSA_STRATEGY
    described = json.loads(json.dumps(mini.describe()))
    assert described["train_size"] == 5000 and described["test_size"] == 1000 and described["zca"] is None


def test_embedded_pixels_are_the_jpeg_files(mini):
    # the tensor rows are the files in class-major, sorted-name order, decoded by PIL as RGB
    for split, per_class, cls, i in (("train", 500, 3, 0), ("train", 500, 9, 499), ("test", 100, 0, 57)):
        file = EMBEDDED / split / CIFAR10_CLASSES[cls] / f"{i:04d}.jpg"
        expected = torch.from_numpy(np.array(Image.open(file).convert("RGB"))).permute(2, 0, 1)
        images = getattr(mini, f"{split}_images")
        labels = getattr(mini, f"{split}_labels")
        assert torch.equal(images[cls * per_class + i], expected)
        assert labels[cls * per_class + i] == cls


def test_embedded_files_follow_the_documented_rule():
    # first 500 train / 100 test files by sorted name, under 10 MB in all
    total = 0
    for split, count in (("train", 500), ("test", 100)):
        for cls in CIFAR10_CLASSES:
            files = sorted(p.name for p in (EMBEDDED / split / cls).iterdir())
            assert files == [f"{i:04d}.jpg" for i in range(count)]
            total += sum(p.stat().st_size for p in (EMBEDDED / split / cls).iterdir())
    assert total < 10_000_000


def test_mean_std_come_from_the_train_split(mini):
    pixels = mini.train_images.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(mini.mean, pixels.mean(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(mini.std, pixels.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    test_mean = mini.test_images.double().mean(dim=(0, 2, 3)) / 255
    assert not np.allclose(mini.mean, test_mean.numpy(), atol=1e-4)  # really the train split


def test_channel_stats_rejects_float():
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(torch.rand(2, 3, 4, 4))


# ------------------------------------------------------------------------------ build script

def _fake_archive(tmp_path, per_class=5):
    rng = np.random.default_rng(0)
    entries = {}
    for split, count in (("train", per_class), ("test", per_class - 2)):
        for cls in ("zebra", "ant"):
            for i in rng.permutation(count):
                entries[f"top/{split}/{cls}/{i:04d}.jpg"] = rng.bytes(20 + int(i))
    names = list(entries)
    rng.shuffle(names)  # archive order is not sorted order
    archive = tmp_path / "fake.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in names + ["top/README.txt"]:
            payload = entries.get(name, b"not an image")
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive, entries


def test_build_script_selects_first_files_by_name_and_copies_bytes(tmp_path):
    build = _build_script()
    archive, entries = _fake_archive(tmp_path)
    chosen = build.select_members(list(entries)[::-1], {"train": 2, "test": 1})
    assert sorted(chosen.values()) == sorted(
        [f"train/{c}/{i:04d}.jpg" for c in ("ant", "zebra") for i in (0, 1)]
        + [f"test/{c}/0000.jpg" for c in ("ant", "zebra")])
    assert chosen == build.select_members(sorted(entries), {"train": 2, "test": 1})  # order-free

    out = tmp_path / "mini"
    summary = build.build(archive, out, train_per_class=2, test_per_class=1)
    assert summary["counts"] == {"train": 4, "test": 2} and summary["classes"] == ["ant", "zebra"]
    assert summary["archive_sha256"] is None  # no .sha256 beside it
    for member, target in chosen.items():
        assert (out / target).read_bytes() == entries[member]  # unchanged bytes
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")) == sorted(chosen.values())

    # a rebuild replaces the folder with the same content
    build.build(archive, out, train_per_class=2, test_per_class=1)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")) == sorted(chosen.values())


def test_build_script_checks_sha256_and_counts(tmp_path):
    build = _build_script()
    archive, _ = _fake_archive(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (tmp_path / "fake.tar.gz.sha256").write_text(f"{digest}  fake.tar.gz\n")
    assert build.build(archive, tmp_path / "ok", 1, 1)["archive_sha256"] == digest
    (tmp_path / "fake.tar.gz.sha256").write_text("0" * 64 + "  fake.tar.gz\n")
    with pytest.raises(ValueError, match="sha256"):
        build.build(archive, tmp_path / "bad", 1, 1)
    (tmp_path / "fake.tar.gz.sha256").unlink()
    with pytest.raises(ValueError, match="fewer than"):
        build.build(archive, tmp_path / "bad", 6, 1)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ preprocess

def _small(mini, n=64, side=8) -> ImageData:
    """An 8x8 version of part of the embedded set: small enough for a quick ZCA."""
    def shrink(x):
        return torch.nn.functional.avg_pool2d(x[:n].float(), 32 // side).round().to(torch.uint8)
    mean, std = channel_stats(shrink(mini.train_images))
    return ImageData("small", shrink(mini.train_images), mini.train_labels[:n], shrink(mini.test_images),
                     mini.test_labels[:n], mini.classes, mean, std)


def test_preprocess_matches_formula_and_deprocess_inverts(mini):
    x = mini.train_images[:16]
    out = mini.preprocess(x)
    mean = torch.tensor(mini.mean).view(1, 3, 1, 1)
    std = torch.tensor(mini.std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, (x.double() / 255 - mean.double()) / std.double(), check_dtype=False)
    back = mini.deprocess(out)
    assert torch.equal((back * 255).round().to(torch.uint8), x)
    assert torch.allclose(mini.preprocess(x[0]), out[0])  # one image works too
    assert torch.allclose(mini.preprocess(x.float() / 255), out)  # float input is taken as [0, 1]
    assert mini.deprocess(out * 100).max() <= 1.0 and mini.deprocess(out * 100).min() >= 0.0


def test_preprocess_with_zca_whitens_unnormalised_pixels_and_round_trips(mini):
    small = _small(mini)
    small.zca = ZCA.fit(small.train_images.double() / 255, eps=0.1)
    x = small.test_images[:10]
    z = small.preprocess(x)
    # the paper's recipe: [0, 1] pixels straight into the whitening, no normalisation before
    torch.testing.assert_close(z.double(), small.zca.transform(x.double() / 255), atol=1e-5, rtol=1e-5)
    assert torch.equal((small.deprocess(z) * 255).round().to(torch.uint8), x)


def test_split_tensors_are_cached_and_refreshed(mini):
    small = _small(mini)
    x1, y1 = small.train_tensors()
    x2, _ = small.train_tensors("cpu")
    assert x1 is x2 and torch.equal(y1, small.train_labels)
    small.zca = ZCA.fit(small.train_images.float() / 255, eps=0.1)
    x3, _ = small.train_tensors()
    assert x3 is not x1 and torch.allclose(x3, small.zca.transform(small.train_images.float() / 255), atol=1e-5)
    xt, yt = small.test_tensors()
    assert xt.shape == small.test_images.shape and torch.equal(yt, small.test_labels)
    described = json.loads(json.dumps(small.describe()))
    assert described["zca"] == {"eps": 0.1, "recipe": RECIPE, "fingerprint": small.zca.fingerprint()}


def test_image_data_checks_its_fields():
    x = torch.zeros(2, 3, 4, 6, dtype=torch.uint8)
    y = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="uint8"):
        ImageData("x", x.float(), y, x, y, ["a"], (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="one value per channel"):
        ImageData("x", x, y, x, y, ["a"], (0.5,), (0.2,))
    with pytest.raises(ValueError, match="not square"):
        ImageData("x", x, y, x, y, ["a"], (0.5,) * 3, (0.2,) * 3).image_size
    digits = ImageData("d", x[:, :1], y, x[:, :1], y, ["a"], (0.5,), (0.2,), digits=True)
    assert digits.dsa_strategy == DIGIT_STRATEGY


def test_one_rule_picks_the_dsa_strategy():
    # data owns the rule; ImageData.dsa_strategy follows it and augment takes its constants from data
    assert dsa_strategy_for(True) == DIGIT_STRATEGY and dsa_strategy_for(False) == DSA_STRATEGY
    assert "flip" in DSA_STRATEGY.split("_") and "flip" not in DIGIT_STRATEGY.split("_")
    x, y = torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)
    for digits in (True, False):
        data = ImageData("d", x, y, x, y, ["a"], (0.5,), (0.2,), digits=digits)
        assert DSA(data.dsa_strategy).strategy == dsa_strategy_for(digits)


# ------------------------------------------------------------------------------ folders

def test_folder_dataset_loads_sorted_classes_and_train_stats(tmp_path):
    tree = make_tree(tmp_path / "pets", classes=("dog", "cat"), train=3, test=2)
    (tree / "train" / "cat" / "notes.txt").write_text("not an image")
    (tree / "train" / ".ipynb_checkpoints").mkdir()
    data = load_dataset(f"folder:{tree}", root=tmp_path / "root")
    assert data.classes == ["cat", "dog"] and data.name == f"folder:{tree}"
    assert data.train_images.shape == (6, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and data.test_labels.tolist() == [0, 0, 1, 1]
    expected = np.asarray(Image.open(tree / "train" / "dog" / "0001.jpg").convert("RGB")).transpose(2, 0, 1)
    assert torch.equal(data.train_images[4], torch.from_numpy(expected.copy()))
    pixels = data.train_images.numpy() / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    # a relative PATH is also looked up in the data root
    assert load_dataset("folder:pets", root=tmp_path).classes == ["cat", "dog"]


def test_folder_cache_is_used_and_rebuilt(tmp_path):
    tree = make_tree(tmp_path / "pets", train=2, test=1)
    cache = tmp_path / "cache"
    first = load_image_folder(tree, name="pets", cache_dir=cache)
    files = list(cache.glob("pets-data-*.pt"))
    assert len(files) == 1
    # a cached load returns what the cache holds: prove it by planting a marker in the cache
    content = safe_load(files[0])
    content["train_images"] = content["train_images"].clone()
    content["train_images"][0, 0, 0, 0] ^= 1
    atomic_save(content, files[0])
    assert not torch.equal(load_image_folder(tree, name="pets", cache_dir=cache).train_images,
                           first.train_images)
    files[0].write_bytes(b"garbage")  # a corrupt cache is rebuilt silently
    assert torch.equal(load_image_folder(tree, name="pets", cache_dir=cache).train_images, first.train_images)
    shutil.copy(EMBEDDED / "train" / "cat" / "0009.jpg", tree / "train" / "cat" / "0009.jpg")
    grown = load_image_folder(tree, name="pets", cache_dir=cache)  # a changed tree is decoded again
    assert grown.train_images.shape[0] == 5
    assert len(list(cache.glob("pets-data-*.pt"))) == 1  # the stale cache was replaced


def test_folder_grayscale_and_mixed_modes(tmp_path):
    gray = tmp_path / "gray"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (gray / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((5, 5), 40 if cls == "a" else 200, np.uint8)).save(gray / split / cls / "x.png")
    data = load_image_folder(gray)
    assert data.channels == 1 and data.mean[0] == pytest.approx((40 + 200) / 2 / 255)
    Image.fromarray(np.full((5, 5, 3), [10, 20, 30], np.uint8)).save(gray / "test" / "b" / "y.png")
    mixed = load_image_folder(gray)
    assert mixed.channels == 3 and mixed.train_images[0, :, 0, 0].tolist() == [40, 40, 40]


@pytest.mark.parametrize("problem, error, message", [
    ("missing", FileNotFoundError, "does not exist"),
    ("no_train", FileNotFoundError, "no train/ folder"),
    ("no_test", FileNotFoundError, "no test/ folder"),
    ("class_mismatch", ValueError, r"only in train: \['dog'\], only in test: \['fox'\]"),
    ("empty_class", ValueError, "holds no images"),
    ("mixed_sizes", ValueError, "differ in size.*Resize"),
    ("broken_image", ValueError, "cannot decode"),
])
def test_folder_errors_say_what_is_wrong(tmp_path, problem, error, message):
    tree = tmp_path / "tree"
    if problem != "missing":
        make_tree(tree, train=1, test=1)
    if problem == "no_train":
        shutil.rmtree(tree / "train")
    elif problem == "no_test":
        shutil.rmtree(tree / "test")
    elif problem == "class_mismatch":
        (tree / "test" / "dog").rename(tree / "test" / "fox")
    elif problem == "empty_class":
        (tree / "test" / "dog" / "0000.jpg").unlink()
    elif problem == "mixed_sizes":
        Image.new("RGB", (16, 16)).save(tree / "test" / "dog" / "small.png")
    elif problem == "broken_image":
        (tree / "train" / "cat" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(error, match=message):
        load_dataset(f"folder:{tree}", root=tmp_path)


def test_zca_through_load_dataset_is_fitted_on_unit_range_train_and_cached(tmp_path):
    tree = make_tree(tmp_path / "tiny", classes=("cat", "dog", "frog"), train=4, test=2, size=4)
    data = load_dataset(f"folder:{tree}", root=tmp_path, zca=True)
    plain = load_dataset(f"folder:{tree}", root=tmp_path)
    assert plain.zca is None and data.zca is not None and data.zca.eps == 0.1
    independent = ZCA.fit(plain.train_images.double() / 255, eps=0.1)
    torch.testing.assert_close(data.zca.matrix, independent.matrix, atol=1e-5, rtol=1e-5)
    zca_files = list((tmp_path / ".cache").glob("*-zca-*.pt"))
    assert len(zca_files) == 1
    again = load_dataset(f"folder:{tree}", root=tmp_path, zca=True)
    assert again.zca.fingerprint() == data.zca.fingerprint()
    zca_files[0].write_bytes(b"garbage")
    assert load_dataset(f"folder:{tree}", root=tmp_path, zca=True).zca.fingerprint() == data.zca.fingerprint()
    # describe() names the ZCA by what it was fitted on, which does not depend on the BLAS
    # round-off of the machine that fitted it
    assert data.describe()["zca"] == {"eps": 0.1, "recipe": RECIPE, "fingerprint": data.zca.fitted_on}
    assert again.zca.fitted_on == data.zca.fitted_on is not None


def test_zca_depends_on_the_pixels_not_on_the_loader_or_its_statistics(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "tiny", classes=("cat", "dog", "frog"), train=4, test=2, size=4)
    data = load_dataset(f"folder:{tree}", root=tmp_path, zca=True)
    # another loader of the same pixels with other normalisation constants (as the cifar10
    # loader's fixed constants differ from a folder tree's measured ones)
    monkeypatch.setattr(data_mod, "channel_stats", lambda images: ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.201)))
    shutil.copytree(tree, tmp_path / "copy")
    other = load_dataset(f"folder:{tmp_path / 'copy'}", root=tmp_path, zca=True)
    assert other.mean != data.mean
    assert other.zca.fitted_on == data.zca.fitted_on
    assert torch.equal(other.preprocess(other.test_images), data.preprocess(data.test_images))


# ------------------------------------------------------------------------------ registry

def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        load_dataset("cifar11")
    text = str(info.value)
    for name in ("cifar10-mini", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn", "folder:PATH"):
        assert name in text
    # importing mttlib registers the ImageNet names: no module is imported by name behind the scenes
    for name in ("tiny-imagenet", "imagenet:...", "cifar10-mini@..."):
        assert name in dataset_names() and name in text
    tree = ast.parse((KIT_ROOT / "mttlib" / "data.py").read_text())
    imported = {f"{n.module}.{a.name}" if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "mttlib.zca.ZCA" in imported  # the check sees imports
    assert not any(m.startswith(("mttlib.imagenet", "importlib")) for m in imported)


def test_register_dataset_exact_alias_and_prefix(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "_LOADERS", dict(data_mod._LOADERS))
    seen = []

    def fake(name, root, *, download=False):
        seen.append((name, root, download))
        x = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
        return ImageData(name, x, torch.zeros(2, dtype=torch.int64), x, torch.zeros(2, dtype=torch.int64),
                         ["a"], (0.0,), (1.0,))

    register_dataset("my_set", aliases=("myset",))(fake)
    register_dataset("my:", prefix=True)(fake)
    register_dataset("my:long:", prefix=True)(lambda name, root, *, download=False: fake("LONG" + name, root))
    assert load_dataset("MY-SET", root=tmp_path).name == "my_set"
    assert load_dataset("myset", root=tmp_path, download=True).name == "my_set"
    assert load_dataset("my:Thing", root=tmp_path).name == "my:Thing"
    assert load_dataset("my:long:x", root=tmp_path).name == "LONGmy:long:x"  # longest prefix wins
    assert seen[0] == ("my_set", tmp_path, False) and seen[1][2] is True
    assert "my_set" in data_mod.dataset_names() and "my:..." in data_mod.dataset_names()


# ------------------------------------------------------------------------------ torchvision

@pytest.mark.parametrize("name, folder, files", [
    ("cifar10", "cifar10/cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch"]),
    ("cifar100", "cifar100/cifar-100-python", ["train", "test", "meta"]),
    ("mnist", "mnist/MNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("fashion_mnist", "fashion_mnist/FashionMNIST/raw", ["train-images-idx3-ubyte"]),
    ("svhn", "svhn", ["train_32x32.mat", "test_32x32.mat"]),
])
def test_torchvision_datasets_offline_name_folder_and_files(tmp_path, name, folder, files):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, root=tmp_path)
    text = str(info.value)
    assert str(tmp_path / folder) in text and "download=True" in text and "MTT_DOWNLOAD=1" in text
    for file in files:
        assert file in text


def test_download_is_attempted_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    calls = []

    class Offline:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            raise OSError("no network")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", root=tmp_path)
    assert calls == []
    with pytest.raises(RuntimeError, match="downloading cifar10 into .* failed"):
        load_dataset("cifar10", root=tmp_path, download=True)
    monkeypatch.setenv("MTT_DOWNLOAD", "1")
    with pytest.raises(RuntimeError, match="no network"):
        load_dataset("cifar10", root=tmp_path)
    assert calls == [(str(tmp_path / "cifar10"), True, True)] * 2


def _cifar_batch(rng, n, label_key, protocol):
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    batch = {b"batch_label": b"fake", b"data": images.reshape(n, 3072), label_key: labels}
    return pickle.dumps(batch, protocol=protocol), images, labels


def test_cifar10_batches_are_read_without_torchvision_checks(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images, train_labels = [], []
    for i in range(1, 6):
        # protocol 2 with numpy.core names, as old Python 2 batches, and the current default
        blob, images, labels = _cifar_batch(rng, 3, b"labels", 2 if i % 2 else pickle.DEFAULT_PROTOCOL)
        if i % 2:
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / f"data_batch_{i}").write_bytes(blob)
        train_images.append(images)
        train_labels += labels
    blob, test_images, test_labels = _cifar_batch(rng, 4, "labels", pickle.DEFAULT_PROTOCOL)  # str keys too
    (folder / "test_batch").write_bytes(blob)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}))

    data = load_dataset("cifar10", root=tmp_path)
    assert torch.equal(data.train_images, torch.from_numpy(np.concatenate(train_images)))
    assert data.train_labels.tolist() == train_labels and data.test_labels.tolist() == test_labels
    assert torch.equal(data.test_images, torch.from_numpy(test_images))
    assert data.classes == CIFAR10_CLASSES and data.digits is False
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2023, 0.1994, 0.2010)

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path),))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(CorruptFileError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)
    assert folder.exists()


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        blob, _, _ = _cifar_batch(rng, 2, b"fine_labels", pickle.DEFAULT_PROTOCOL)
        (folder / split).write_bytes(blob)
    names = [f"c{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))
    data = load_dataset("cifar100", root=tmp_path)
    assert data.num_classes == 100 and data.train_images.shape == (2, 3, 32, 32)
    assert data.std == (0.2673, 0.2564, 0.2762)


def _idx(path, array):
    kind = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_through_torchvision_and_digits_flag(tmp_path):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    _idx(raw / "train-images-idx3-ubyte", images)
    _idx(raw / "train-labels-idx1-ubyte", np.arange(5))
    _idx(raw / "t10k-images-idx3-ubyte", images[:2])
    _idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 9]))
    data = load_dataset("mnist", root=tmp_path)
    assert data.train_images.shape == (5, 1, 28, 28) and torch.equal(data.train_images[:, 0], torch.from_numpy(images))
    assert data.test_labels.tolist() == [7, 9] and data.digits and data.dsa_strategy == DIGIT_STRATEGY
    assert data.mean == (0.1307,) and data.std == (0.3081,) and data.num_classes == 10


# ------------------------------------------------------------------------------ CLI

def test_cli_prints_description(tmp_path, capsys):
    tree = make_tree(tmp_path / "pets", train=1, test=1)
    assert cli.main(["data", f"folder:{tree}", "--data-root", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classes"] == ["cat", "dog"] and printed["train_size"] == 2
    assert cli.main(["data", "nope", "--data-root", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err

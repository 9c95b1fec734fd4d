"""Tests of mttlib.presets: the paper's numbers, sources, and presets that can actually run."""

from __future__ import annotations

import pytest
import torch

from mttlib import experts
from mttlib.data import ImageData
from mttlib.distill import DistillConfig
from mttlib.models import make_model
from mttlib.presets import (DATASET_FACTS, IMAGENET_SUBSETS, SIZES, DatasetFacts, Preset, derive_preset, get_preset,
                            list_presets, presets_table)


def test_known_paper_values():
    c10 = get_preset("cifar10", 1)
    assert (c10.syn_steps, c10.expert_epochs, c10.max_start_epoch, c10.zca) == (50, 2, 2, True)
    assert (c10.lr_img, c10.lr_lr, c10.lr_teacher, c10.batch_syn) == (100, 1e-7, 0.01, None)
    # the reference README's own example command (CIFAR-100, ipc 1)
    c100 = get_preset("CIFAR100", 1)
    assert (c100.syn_steps, c100.expert_epochs, c100.max_start_epoch, c100.lr_img, c100.lr_lr, c100.lr_teacher,
            c100.zca) == (20, 3, 20, 1000, 1e-5, 0.01, True)
    assert get_preset("cifar100", 50).batch_syn == 125 and get_preset("cifar100", 50).syn_steps == 80
    assert get_preset("cifar10", 50).zca is False and get_preset("cifar100", 10).zca is False
    tiny = get_preset("tiny", 10)
    assert tiny.dataset == "tiny-imagenet" and tiny.model == "convnetd4" and tiny.batch_syn == 200
    # the reference README's ImageNet example (imagefruit, ipc 1, ConvNetD5)
    fruit = get_preset("imagefruit", 1)
    assert fruit.dataset == "imagenet:imagefruit" and fruit.model == "convnetd5"
    assert (fruit.syn_steps, fruit.expert_epochs, fruit.max_start_epoch, fruit.lr_img, fruit.lr_lr) == \
           (20, 2, 10, 1000, 1e-6)
    assert all(p.iterations == 5000 and p.init == "real" for p in list_presets("paper"))


def test_the_cifar10_ipc10_typo_is_documented():
    p = get_preset("cifar10", 10)
    assert p.lr_img == 100 and (p.syn_steps, p.expert_epochs, p.max_start_epoch) == (30, 2, 20)
    assert "typo" in p.note and "lr_img" in p.note and "CIFAR 10 ipc 10 Hyperparameters" in p.note


def test_every_entry_has_a_source_and_every_combination_exists():
    presets = list_presets()
    assert all(isinstance(p, Preset) and len(p.source) > 20 for p in presets)
    assert {p.size for p in presets} == set(SIZES)
    for dataset in ("cifar10", "cifar100", "tiny-imagenet"):
        for ipc in (1, 10, 50):
            assert get_preset(dataset, ipc).name == f"{dataset}/ipc{ipc}/paper"
    for subset in IMAGENET_SUBSETS:
        for ipc in (1, 10):
            assert get_preset(f"imagenet:{subset}", ipc).dataset == f"imagenet:{subset}"
    for size in ("classroom", "smoke"):
        for ipc in (1, 10):
            assert get_preset("cifar10-mini", ipc, size).dataset == "cifar10-mini"
    assert len({(p.dataset, p.ipc, p.size) for p in presets}) == len(presets)


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.name)
def test_presets_make_valid_runs(preset):
    config = DistillConfig.from_preset(preset)
    assert config.preset == preset.name and config.syn_steps == preset.syn_steps
    # the experts the preset trains are long enough for every start epoch it draws
    assert preset.max_start_epoch - 1 + preset.expert_epochs <= preset.expert_train_epochs
    assert 0 < preset.lr_img and 0 < preset.lr_lr and 0 < preset.lr_teacher


def test_classroom_sizes_share_their_experts():
    ipc1, ipc10 = get_preset("cifar10-mini", 1, "classroom"), get_preset("cifar10-mini", 10, "classroom")
    same = ("model", "model_kwargs", "zca", "expert_train_epochs", "num_experts")
    assert all(getattr(ipc1, f) == getattr(ipc10, f) for f in same)
    assert ipc1.model_kwargs["width"] <= 64 and ipc1.iterations <= 1000
    smoke = get_preset("cifar10-mini", 1, "smoke")
    assert smoke.iterations <= 10 and smoke.syn_steps <= 5


def test_lookup_errors_and_table():
    with pytest.raises(KeyError, match="no 'paper' preset for dataset 'cifar10' at ipc 3"):
        get_preset("cifar10", 3)
    with pytest.raises(ValueError, match="unknown preset size"):
        get_preset("cifar10", 1, "huge")
    assert get_preset("imagenet:imagewoof:size=64", 1) is get_preset("imagewoof", 1)
    table = presets_table()
    assert table.count("\n") == len(list_presets("paper")) + 1 and "| cifar10 | 10 |" in table
    assert get_preset("cifar10", 1).replace(iterations=7).iterations == 7


# --- classroom and smoke presets for any dataset, derived by rule ---------------------------------


def fake_data(name="folder:/somewhere", channels=3, side=32, classes=10, per_class=2) -> ImageData:
    images = torch.zeros(classes * per_class, channels, side, side, dtype=torch.uint8)
    labels = torch.arange(classes).repeat(per_class)
    return ImageData(name, images, labels, images[:classes], labels[:classes], [f"c{i}" for i in range(classes)],
                     (0.5,) * channels, (0.25,) * channels)


@pytest.mark.parametrize("side, model, depth", [(32, "convnet", 3), (28, "convnet", 3), (64, "convnetd4", 4),
                                                (128, "convnetd5", 5), (16, "convnetd2", 2), (256, "convnetd5", 5)])
def test_the_rule_takes_the_depth_from_the_resolution(side, model, depth):
    p = derive_preset("x", DatasetFacts(5000, 1, side, 10), 1, "classroom")
    assert p.model == model and p.model_kwargs == {"width": 32} and p.size == "classroom"
    net = make_model(p.model, 1, 10, side, **p.model_kwargs)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == depth
    assert net(torch.zeros(2, 1, side, side)).shape == (2, 10)
    assert derive_preset("x", DatasetFacts(5000, 1, side, 10), 1, "smoke").model_kwargs == {"width": 8}


def test_the_rule_scales_the_experts_with_the_data_and_the_steps_with_ipc():
    mini, full = DatasetFacts(5000, 3, 32, 10), DatasetFacts(50000, 3, 32, 10)
    assert derive_preset("m", mini, 1, "classroom").expert_train_epochs == 5  # 25,000 image passes per expert
    assert derive_preset("m", mini, 1, "smoke").expert_train_epochs == 2
    assert derive_preset("c", full, 1, "classroom").expert_train_epochs == 1  # one epoch at least
    small = derive_preset("s", DatasetFacts(1000, 3, 32, 3), 1, "classroom")  # 4 expert steps an epoch
    assert (small.expert_train_epochs, small.expert_epochs, small.max_start_epoch) == (10, 4, 7)  # 10 at most
    tiny = derive_preset("t", DatasetFacts(36, 1, 28, 3), 1, "smoke")  # one expert step an epoch: M covers 3 steps
    assert (tiny.expert_train_epochs, tiny.expert_epochs, tiny.max_start_epoch) == (3, 3, 1)
    big = derive_preset("i", DatasetFacts(13000, 3, 128, 10), 1, "classroom")
    assert big.iterations == 10 and big.checkpoint_every == 1  # 16x the pixels of 32 px: fewer iterations
    ipc1, ipc10 = (derive_preset("m", mini, ipc, "classroom") for ipc in (1, 10))
    assert (ipc1.syn_steps, ipc10.syn_steps, ipc1.iterations) == (12, 15, 100)
    assert derive_preset("m", mini, 10, "smoke").syn_steps == 3


def test_a_100_class_dataset_caps_the_synthetic_batch():
    assert get_preset("cifar100", 1, "classroom").batch_syn is None  # 100 images: all in every step
    assert get_preset("cifar100", 10, "classroom").batch_syn == 100  # 1000 images: 100 per step
    assert get_preset("tiny", 1, "smoke").batch_syn == 100 and get_preset("tiny", 1, "smoke").model == "convnetd4"


@pytest.mark.parametrize("dataset", sorted(DATASET_FACTS) + ["imagewoof", "Fashion-MNIST"])
@pytest.mark.parametrize("size", ["classroom", "smoke"])
def test_every_registered_dataset_has_classroom_and_smoke_presets(dataset, size):
    for ipc in (1, 3, 10, 50):
        p = get_preset(dataset, ipc, size)
        config = DistillConfig.from_preset(p)
        assert config.preset == p.name and p.ipc == ipc and p.size == size and not p.zca
        assert config.epochs_needed() <= p.expert_train_epochs  # the experts it trains are long enough
        explicit = (p.dataset, ipc, size) in {(q.dataset, q.ipc, q.size) for q in list_presets()}
        assert explicit or p.source.startswith("derived by rule from ")
    if dataset.lower() in ("fashion_mnist", "fashion-mnist"):
        assert "1x28x28 px in 10 classes" in get_preset(dataset, 1, size).source


def test_hand_tuned_entries_win_and_data_gives_the_facts():
    tuned = get_preset("cifar10-mini", 1, "classroom")
    assert tuned in list_presets("classroom") and "derived" not in tuned.source
    assert get_preset("cifar10-mini", 1, "classroom", data=fake_data("cifar10-mini", side=64)) is tuned
    assert get_preset("cifar10-mini", 2, "classroom").source.startswith("derived by rule")  # no entry at ipc 2
    # the smoke rule gives cifar10-mini the experts of its hand-tuned smoke entries, so they are shared
    same = ("model", "model_kwargs", "zca", "expert_train_epochs", "num_experts")
    derived, smoke = get_preset("cifar10-mini", 2, "smoke"), get_preset("cifar10-mini", 1, "smoke")
    assert all(getattr(derived, f) == getattr(smoke, f) for f in same)
    # loaded data wins over the table (a 64 px ImageNet subset) and is needed for a folder
    assert get_preset("imagenet:imagewoof:size=64", 1, "classroom", data=fake_data(side=64)).model == "convnetd4"
    assert get_preset("imagewoof", 1, "classroom").model == "convnetd5"
    folder = get_preset("folder:/somewhere", 1, "smoke", data=fake_data(channels=1, side=28, classes=3))
    assert folder.name == "folder:/somewhere/ipc1/smoke" and "1x28x28 px in 3 classes" in folder.source
    with pytest.raises(KeyError, match="data=load_dataset"):
        get_preset("folder:/somewhere", 1, "smoke")
    with pytest.raises(KeyError, match="no 'paper' preset .* borrow one"):
        get_preset("folder:/somewhere", 1, "paper", data=fake_data())


def test_borrowing_a_paper_row_says_so_and_needs_the_same_shape():
    c10 = get_preset("cifar10", 10, "paper")
    p = get_preset("folder:/jpegs", 10, "paper", data=fake_data("folder:/jpegs"), like="CIFAR-10")
    assert p.name == "cifar10/ipc10/paper (borrowed for folder:/jpegs)" and p.dataset == "folder:/jpegs"
    assert p.replace(dataset="cifar10", like="", note=c10.note) == c10  # the row's values, unchanged
    assert "cifar10/ipc10/paper applied to folder:/jpegs" in p.note
    config = DistillConfig.from_preset(p)
    assert config.preset == p.name and config.dataset == "folder:/jpegs" and config.lr_img == c10.lr_img
    assert experts.ExpertConfig.from_preset(p).dataset == "folder:/jpegs"
    assert get_preset("cifar10", 1, "smoke", like="cifar10").like == ""  # borrowing from oneself: the preset itself
    for data, why in ((fake_data(classes=3), "3 classes"), (fake_data(channels=1), "1x32x32"),
                      (fake_data(side=64), "3x64x64")):
        with pytest.raises(ValueError, match=f"cannot borrow cifar10/ipc10/paper for folder:/somewhere: .*{why}"):
            get_preset("folder:/somewhere", 10, "paper", data=data, like="cifar10")
    with pytest.raises(ValueError, match="cannot borrow cifar100/ipc1/paper for mnist"):
        get_preset("mnist", 1, "paper", like="cifar100")
    with pytest.raises(ValueError, match="unknown .pass data=."):
        get_preset("folder:/somewhere", 1, "paper", like="cifar10")


def test_notebook_expert_configs_for_any_dataset():
    assert experts.classroom_config() == experts.ExpertConfig.from_preset(get_preset("cifar10-mini", 10, "classroom"))
    assert experts.smoke_config(epochs=3).epochs == 3
    mnist = experts.classroom_config("mnist")
    assert (mnist.dataset, mnist.model, mnist.model_kwargs, mnist.epochs) == ("mnist", "convnet", {"width": 32}, 1)
    folder = experts.smoke_config(data=fake_data("folder:/x", channels=1, side=16, classes=3))
    assert folder.dataset == "folder:/x" and folder.model == "convnetd2"


def test_the_table_lists_derived_rows_for_the_small_sizes():
    table = presets_table("classroom")
    assert "| cifar10-mini | 1 |" in table and "| mnist* | 10 | convnet |" in table
    assert "| tiny-imagenet* | 1 | convnetd4 |" in table and "derive_preset" in table
    assert "*" not in presets_table("paper")

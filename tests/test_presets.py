"""Tests of mttlib.presets: the paper's numbers, sources, and presets that can actually run."""

from __future__ import annotations

import pytest

from mttlib.distill import DistillConfig
from mttlib.presets import IMAGENET_SUBSETS, SIZES, Preset, get_preset, list_presets, presets_table


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

"""The quality benchmark's settings and its command-line overrides (the benchmark itself runs for
tens of minutes and is not part of the tests)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from mttlib.distill import DistillConfig
from mttlib.presets import get_preset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_size_follows_the_paper_preprocessing(bench):
    for ipc in (1, 10):
        dataset, experts, num_experts, config = bench.settings("benchmark", "/data/cifar10", ipc)
        assert dataset == "folder:/data/cifar10" and num_experts == 4
        assert experts.zca and config.zca  # experts and synthetic images live in the same space
        assert experts.lr == config.lr_teacher == 0.01 and experts.epochs == 10
        # the distillation reads no snapshot the experts do not have
        assert config.epochs_needed() <= experts.epochs
    assert bench.settings("benchmark", "/d", 1)[3].syn_steps == 50  # the paper's CIFAR-10 ipc 1 value
    assert bench.settings("benchmark", "/d", 10)[3].syn_steps == 30  # and its ipc 10 value
    assert bench.settings("benchmark", "/d", 10)[3].max_start_epoch > bench.settings("benchmark", "/d", 1)[3].max_start_epoch


def test_classroom_size_is_the_classroom_preset(bench):
    _, experts, num_experts, config = bench.settings("classroom", None, 1)
    assert config == DistillConfig.from_preset(get_preset("cifar10-mini", 1, "classroom"))
    assert not config.zca and not experts.zca and num_experts == 3


def test_benchmark_size_needs_data(bench):
    with pytest.raises(SystemExit, match="--data PATH"):
        bench.settings("benchmark", None, 1)


def test_set_overrides_are_typed(bench):
    config = bench.settings("benchmark", "/d", 1)[3]
    parser = argparse.ArgumentParser()
    changes = bench.overrides(config, ["lr_img=1000", "syn_steps=30", "zca=false", "init=noise"], parser)
    assert changes == {"lr_img": 1000.0, "syn_steps": 30, "zca": False, "init": "noise"}
    assert isinstance(changes["syn_steps"], int) and isinstance(changes["lr_img"], float)
    assert bench.overrides(config, ["batch_syn=5", "ema_decay=0.9"], parser) == {"batch_syn": 5, "ema_decay": 0.9}
    for bad in (["no_such_field=1"], ["syn_steps"], ["syn_steps=many"], ["zca=yes please"]):
        with pytest.raises(SystemExit):
            bench.overrides(config, bad, parser)


def test_a_refused_value_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--size", "benchmark", "--data", "/nowhere", "--set", "syn_steps=-3"])
    assert exit_info.value.code == 2 and "syn_steps must be a positive integer" in capsys.readouterr().err


def test_epochs_needed_is_the_last_snapshot_read():
    config = DistillConfig(dataset="d", ipc=1, expert_epochs=2, max_start_epoch=2)
    assert config.epochs_needed() == 3  # start epochs 0-1, targets up to epoch 3
    assert config.replace(max_start_epoch_end=6, start_epoch_rise=10).epochs_needed() == 7


def test_benchmark_size_evaluates_as_long_as_the_paper(bench):
    assert bench.EVAL_EPOCHS == {"classroom": 300, "benchmark": 1000}


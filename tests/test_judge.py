"""Tests of mttlib.judge: the texture judge is trained once on the real images, cached, and reloaded."""

from __future__ import annotations

import pytest
import torch

from mttlib import judge as J
from mttlib import texture
from mttlib.data import ImageData

TINY = J.JudgeConfig(model_kwargs={"width": 8, "depth": 2}, epochs=2, batch_size=16, compile=False)


def tiny_data(seed: int = 0) -> ImageData:
    """Two classes told apart by brightness: a judge learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat(24)
    images = (torch.randint(0, 60, (48, 3, 8, 8), generator=g) + 150 * labels[:, None, None, None]).to(torch.uint8)
    return ImageData(name="tiny", train_images=images[:40], train_labels=labels[:40], test_images=images[40:],
                     test_labels=labels[40:], classes=["dark", "bright"], mean=(0.5,) * 3, std=(0.25,) * 3)


def test_judge_learns_answers_probabilities_and_is_cached(tmp_path, monkeypatch):
    data = tiny_data()
    judge = J.train_judge(data, J.JudgeConfig(**{**TINY.__dict__, "epochs": 6, "lr": 0.05}), cache=tmp_path,
                          device="cpu")
    assert judge.test_acc == 1.0  # brightness is easy
    x = data.preprocess(data.test_images)
    probs = judge(x)
    assert probs.shape == (8, 2) and torch.allclose(probs.sum(1), torch.ones(8))
    assert len(list(tmp_path.glob("judge-tiny-convnet-*.pt"))) == 1
    # the second call loads the file: no training, the same network
    monkeypatch.setattr(J, "train", lambda *a, **k: pytest.fail("the cached judge was trained again"))
    again = J.train_judge(data, J.JudgeConfig(**{**TINY.__dict__, "epochs": 6, "lr": 0.05}), cache=tmp_path,
                          device="cpu")
    assert torch.equal(again(x), probs) and again.test_acc == judge.test_acc and again.seconds == judge.seconds


def test_another_recipe_or_other_data_trains_another_judge(tmp_path):
    first = J.train_judge(tiny_data(), TINY, cache=tmp_path, device="cpu")
    other = J.train_judge(tiny_data(), J.JudgeConfig(**{**TINY.__dict__, "seed": 1}), cache=tmp_path, device="cpu")
    x = tiny_data().preprocess(tiny_data().test_images)
    assert not torch.equal(first(x), other(x))
    assert not torch.equal(J.train_judge(tiny_data(seed=1), TINY, cache=None, device="cpu")(x), first(x))


def test_the_judge_scores_crops_of_canvases():
    data = tiny_data()
    judge = J.train_judge(data, J.JudgeConfig(**{**TINY.__dict__, "epochs": 6, "lr": 0.05}), device="cpu")
    canvases = texture.tile(data.preprocess(data.test_images[:2]), 2, 2)  # 16 px canvases of one test image each
    recognised = texture.crop_recognition(judge, canvases, data.test_labels[:2], 8, crops=10,
                                          generator=torch.Generator().manual_seed(0))
    assert recognised == {0: 1.0, 1: 1.0}


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        J.JudgeConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        J.JudgeConfig(lr=0.0)


def test_the_shipped_judge_of_the_embedded_data_loads_without_training_and_scores_what_it_records(monkeypatch):
    from mttlib.data import load_dataset
    from mttlib.train import accuracy

    data = load_dataset("cifar10-mini")
    def refuse(*args, **kwargs):
        raise RuntimeError("trained again")

    monkeypatch.setattr(J, "train", refuse)
    judge = J.train_judge(data, cache=None, device="cpu")
    assert 0.55 < judge.test_acc < 0.7, judge  # about 60 % on the test photos
    measured = accuracy(judge.net, *data.test_tensors(torch.device("cpu")))[0]
    assert abs(measured - judge.test_acc) < 0.005, (measured, judge.test_acc)  # its record is its own
    with pytest.raises(RuntimeError, match="trained again"):  # another recipe is not the shipped one
        J.train_judge(data, J.JudgeConfig(epochs=1), cache=None, device="cpu")
    with pytest.raises(RuntimeError, match="trained again"):
        J.train_judge(data, cache=None, device="cpu", shipped=False)

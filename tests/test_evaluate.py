"""Tests of mttlib.evaluate and mttlib.ranking: the evaluation recipe, baselines (the full-data ceiling with
its plateau stop and cache), DD-Ranking's IOR and HLR, validation split, released sets, CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from mttlib import cli, ranking, released
from mttlib import evaluate as ev
from mttlib.augment import DSA
from mttlib.data import ImageData
from mttlib.io import CorruptFileError, atomic_save

TINY = {"width": 8, "depth": 1}  # a ConvNet small enough for many quick runs


def stripes_data(per_class: int = 12, test_per_class: int = 10, size: int = 16, seed: int = 0) -> ImageData:
    """Four easy classes: horizontal, vertical and the two diagonal stripe patterns, with noise.

    Each image carries its index in pixel (0, 0, 0) of channel 0 .. 1 so tests can identify it.
    """
    g = torch.Generator().manual_seed(seed)

    def make(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(size).view(-1, 1).float()
        cols = torch.arange(size).view(1, -1).float()
        images, labels = [], []
        for c, coord in enumerate((rows, cols, rows + cols, rows - cols)):
            for _ in range(n_per_class):
                period = 3 + 3 * torch.rand(1, generator=g)
                phase = 2 * math.pi * torch.rand(1, generator=g)
                wave = torch.sin(2 * math.pi * coord.expand(size, size) / period + phase)
                img = 0.5 + 0.35 * wave + 0.08 * torch.randn(3, size, size, generator=g)
                images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
                labels.append(c)
        return torch.stack(images), torch.tensor(labels)

    train_x, train_y = make(per_class)
    test_x, test_y = make(test_per_class)
    index = torch.arange(train_x.shape[0])
    train_x[:, 0, 0, 0] = (index % 256).to(torch.uint8)  # identity tag of each training image
    train_x[:, 0, 0, 1] = (index // 256).to(torch.uint8)
    return ImageData(name="stripes", train_images=train_x, train_labels=train_y, test_images=test_x,
                     test_labels=test_y, classes=["horizontal", "vertical", "diag", "antidiag"],
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def data() -> ImageData:
    return stripes_data()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches run fastest on one thread (and far faster than two on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tagged_index(images_uint8: torch.Tensor) -> list[int]:
    return (images_uint8[:, 0, 0, 0].long() + 256 * images_uint8[:, 0, 0, 1].long()).tolist()


def small_set(data: ImageData, per_class: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return ev.random_real_subset(data, per_class, seed=0)


# --------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize("epochs", [6, 7])
def test_lr_drops_tenfold_at_half_time(data: ImageData, epochs: int) -> None:
    x, y = small_set(data)
    seen: dict[int, float] = {}

    def hook(epoch: int, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        seen[epoch] = optimizer.param_groups[0]["lr"]

    result = ev.train_and_test("convnet", x, y, data, lr=0.05, epochs=epochs, model_kwargs=TINY,
                               device="cpu", on_epoch_end=hook)
    half = epochs // 2
    expected = [0.05] * half + [0.005] * (epochs - half)
    assert [seen[e] for e in range(epochs)] == pytest.approx(expected, rel=1e-12)
    assert result.lr_curve == pytest.approx(expected, rel=1e-12)
    flat = ev.train_and_test("convnet", x, y, data, lr=0.05, epochs=epochs, model_kwargs=TINY,
                             device="cpu", lr_decay=False)
    assert flat.lr_curve == pytest.approx([0.05] * epochs)


def test_defaults_are_the_papers_recipe() -> None:
    recipe = ev.Recipe(epochs=1000)
    assert (recipe.momentum, recipe.weight_decay, recipe.batch_size, recipe.lr) == (0.9, 5e-4, 256, 0.01)
    assert recipe.dsa is True and recipe.lr_decay is True and ev.PAPER_EPOCHS == 1000


@pytest.mark.parametrize("momentum, weight_decay, lr", [(0.9, 5e-4, 0.05), (0.5, 0.2, 0.3)])
def test_sgd_steps_match_a_manual_computation(data: ImageData, momentum: float, weight_decay: float,
                                              lr: float) -> None:
    """Three full-batch steps (no augmentation) against hand-written SGD with momentum and L2 decay.

    Epochs 0 and 1 use ``lr`` (step 2 carries momentum); epoch 2 is after the half-time drop,
    where the paper's code restarts the optimiser: lr / 10 and a fresh momentum buffer.
    """
    x, y = small_set(data, per_class=3)
    seed = 123
    snapshots = []

    def hook(epoch, net, optimizer):
        snapshots.append([p.detach().clone() for p in net.parameters()])

    ev.train_and_test("convnet", x, y, data, lr=lr, epochs=4, momentum=momentum, weight_decay=weight_decay,
                      dsa=False, seed=seed, model_kwargs=TINY, device="cpu", on_epoch_end=hook)

    net = ev.make_run_model("convnet", data, seed, TINY)
    params = [p.detach().clone() for p in net.parameters()]
    reference = copy.deepcopy(net)

    def gradient(values):
        with torch.no_grad():
            for p, v in zip(reference.parameters(), values):
                p.copy_(v)
        loss = F.cross_entropy(reference(x), y)
        return torch.autograd.grad(loss, list(reference.parameters()))

    buffers = None
    plain = None  # the same steps without momentum and weight decay: must differ
    for step, rate in enumerate([lr, lr, lr / 10]):
        grads = gradient(params)
        d = [g + weight_decay * p for g, p in zip(grads, params)]
        if step == 2:
            buffers = None  # restart at the drop
        buffers = d if buffers is None else [momentum * b + di for b, di in zip(buffers, d)]
        if step == 1:
            plain = [p - rate * g for p, g in zip(params, grads)]
        params = [p - rate * b for p, b in zip(params, buffers)]
        for got, want in zip(snapshots[step], params):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-6)
        if step == 1 and weight_decay > 0.01:
            gap = max((a - b).abs().max().item() for a, b in zip(plain, params))
            assert gap > 1e-3, "momentum and weight decay must change the step visibly in this case"


def test_seeds_reproduce_runs_and_differ_between_runs(data: ImageData) -> None:
    x, y = small_set(data)
    kwargs = dict(lr=0.05, epochs=3, model_kwargs=TINY, device="cpu")
    a = ev.train_and_test("convnet", x, y, data, seed=7, **kwargs)
    b = ev.train_and_test("convnet", x, y, data, seed=7, **kwargs)
    c = ev.train_and_test("convnet", x, y, data, seed=8, **kwargs)
    assert a.test_acc == b.test_acc and a.loss_curve == b.loss_curve
    assert a.loss_curve != c.loss_curve

    init7 = torch.cat([p.flatten() for p in ev.make_run_model("convnet", data, 7, TINY).parameters()])
    again = torch.cat([p.flatten() for p in ev.make_run_model("convnet", data, 7, TINY).parameters()])
    init8 = torch.cat([p.flatten() for p in ev.make_run_model("convnet", data, 8, TINY).parameters()])
    assert torch.equal(init7, again) and not torch.allclose(init7, init8)

    # run k of an evaluation is train_and_test with seed run_seed(seed, k)
    assert ev.run_seed(3, 1) == ev.run_seed(3, 1)
    assert len({ev.run_seed(s, k) for s in range(4) for k in range(4)}) == 16
    res = ev.evaluate_set(x, y, data, num_runs=2, seed=3, progress=False, **kwargs)
    assert res.config["seeds"] == [ev.run_seed(3, 0), ev.run_seed(3, 1)]
    single = ev.train_and_test("convnet", x, y, data, seed=ev.run_seed(3, 1), **kwargs)
    assert res.accuracies[1] == single.test_acc and res.runs[1].loss_curve == single.loss_curve


def test_training_reaches_high_accuracy_on_an_easy_set(data: ImageData) -> None:
    """Stripe orientation survives DSA; a network that does not learn stays near 25 %."""
    x, y = data.train_tensors()
    result = ev.evaluate_set(x, y, data, model="convnet", model_kwargs={"width": 16, "depth": 2},
                             num_runs=1, lr=0.01, epochs=20, batch_size=16, device="cpu", progress=False)
    assert result.mean >= 0.9, result
    assert result.runs[0].loss_curve[-1] < 0.5 * result.runs[0].loss_curve[0]


def test_soft_labels_train_like_matching_hard_labels(data: ImageData) -> None:
    x, y = small_set(data)
    kwargs = dict(lr=0.05, epochs=3, model_kwargs=TINY, device="cpu", seed=5)
    hard = ev.train_and_test("convnet", x, y, data, **kwargs)
    soft = ev.train_and_test("convnet", x, F.one_hot(y, 4).float(), data, **kwargs)
    assert soft.loss_curve == pytest.approx(hard.loss_curve, rel=1e-4)
    blurred = 0.7 * F.one_hot(y, 4).float() + 0.075
    mixed = ev.evaluate_set(x, blurred, data, num_runs=1, progress=False, epochs=3, lr=0.05,
                            model_kwargs=TINY, device="cpu")
    assert 0 <= mixed.mean <= 1
    with pytest.raises(ValueError, match="soft labels"):
        ev.train_and_test("convnet", x, torch.rand(x.shape[0], 3), data, **kwargs)


def test_bad_inputs_raise_clear_errors(data: ImageData) -> None:
    x, y = small_set(data)
    kwargs = dict(epochs=1, model_kwargs=TINY, device="cpu")
    with pytest.raises(ValueError, match="channels"):
        ev.train_and_test("convnet", x[:, :1], y, data, **kwargs)
    with pytest.raises(ValueError, match="labels"):
        ev.train_and_test("convnet", x, y[:-1], data, **kwargs)
    with pytest.raises(ValueError, match="0..3"):
        ev.train_and_test("convnet", x, y + 4, data, **kwargs)
    with pytest.raises(ValueError, match="learning rate"):
        ev.train_and_test("convnet", x, y, data, lr=-1.0, **kwargs)
    with pytest.raises(ValueError, match="train_transform"):
        ev.train_and_test("convnet", F.pad(x, (2, 2, 2, 2)), y, data, **kwargs)


def test_a_diverging_run_stops_with_a_warning(data: ImageData) -> None:
    x, y = small_set(data)
    with pytest.warns(RuntimeWarning, match="smaller lr"):
        result = ev.train_and_test("convnet", x, y, data, lr=1e30, epochs=5, model_kwargs=TINY, device="cpu")
    assert result.diverged and len(result.loss_curve) < 5 and not math.isfinite(result.loss_curve[-1])
    assert result.epochs == len(result.loss_curve)  # the epochs it trained, not the 5 it was given


def test_train_transform_runs_before_augmentation(data: ImageData) -> None:
    """Canvases larger than the image size are cropped by the hook, then trained on."""
    x, y = small_set(data)
    canvases = F.pad(x, (0, 4, 0, 4), mode="circular")
    calls = []

    def crop(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert isinstance(generator, torch.Generator)
        calls.append(tuple(batch.shape))
        i, j = torch.randint(0, 5, (2,), generator=generator).tolist()
        return batch[..., i:i + 16, j:j + 16]

    result = ev.train_and_test("convnet", canvases, y, data, epochs=2, model_kwargs=TINY, device="cpu",
                               train_transform=crop)
    assert calls == [(8, 3, 20, 20)] * 2 and 0 <= result.test_acc <= 1


def test_eval_result_summary(data: ImageData) -> None:
    x, y = small_set(data)
    result = ev.evaluate_set(x, y, data, num_runs=2, epochs=2, model_kwargs=TINY, device="cpu", progress=False)
    accs = torch.tensor(result.accuracies, dtype=torch.float64)
    assert result.mean == pytest.approx(accs.mean().item())
    assert result.std == pytest.approx(accs.std(unbiased=False).item())
    text = str(result)
    assert text.endswith("% (2 ConvNet runs, 2 epochs)") and "±" in text
    assert result.config["epochs_trained"] == [2, 2] and result.epochs_text() == "2"
    assert result.table_row(method="distilled", ipc=2) == {"method": "distilled", "ipc": 2, "mean": result.mean,
                                                           "std": result.std, "runs": 2, "epochs": "2"}
    again = ev.EvalResult.from_dict(json.loads(json.dumps(result.to_dict(runs=True))))
    assert str(again) == text and again.runs == result.runs and again.config == result.config
    result.config["epochs_trained"] = [17, 15]  # networks that stopped early say so
    assert result.epochs_text() == "15-17 of 2" and str(result).endswith("(2 ConvNet runs, 15-17 of 2 epochs)")


# --------------------------------------------------------------------------- baselines and splits


def test_random_real_subset_takes_ipc_per_class_from_train(data: ImageData) -> None:
    x, y = ev.random_real_subset(data, 3, seed=1)
    assert torch.bincount(y, minlength=4).tolist() == [3, 3, 3, 3]
    train_x, train_y = data.train_tensors()
    for img, label in zip(x, y):
        match = (train_x - img).flatten(1).abs().amax(1) < 1e-6
        assert match.sum() == 1 and train_y[match].item() == label.item()
    x2, y2 = ev.random_real_subset(data, 3, seed=1)
    x3, _ = ev.random_real_subset(data, 3, seed=2)
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    with pytest.raises(ValueError, match="ipc"):
        ev.random_real_subset(data, 13, seed=0)


def test_random_real_baseline_draws_a_subset_per_run(data: ImageData) -> None:
    res = ev.evaluate_random_real(data, 2, num_runs=2, epochs=1, model_kwargs=TINY, device="cpu",
                                  progress=False, seed=4)
    assert res.config["baseline"] == "random-real" and res.config["num_images"] == 8
    assert len(res.accuracies) == 2


def test_full_data_baseline_uses_the_whole_train_split(data: ImageData) -> None:
    res = ranking.evaluate_full_data(data, epochs=2, model_kwargs=TINY, device="cpu", progress=False)
    assert res.config["num_images"] == data.train_images.shape[0] and len(res.accuracies) == 1
    assert res.config["baseline"] == "full" and res.config["epochs_trained"] == [2]
    assert res.runs[0].lr_curve == pytest.approx([0.01, 0.001])  # the recipe's fixed schedule
    with pytest.raises(ValueError, match="patience"):
        ranking.evaluate_full_data(data, epochs=4, patience=4, model_kwargs=TINY, device="cpu")


def test_plateau_stop_ends_a_run_whose_accuracy_stops_rising(data: ImageData) -> None:
    """At lr 1e-12 the weights cannot move (far below float32 resolution): the test accuracy after epoch 1
    is never beaten, so the constant phase stops after 1 + patience epochs and the decayed tail follows."""
    res = ranking.evaluate_full_data(data, epochs=20, patience=2, lr=1e-12, model_kwargs=TINY, device="cpu",
                                     progress=False)
    run = res.runs[0]
    assert run.epochs == 5 and res.config["epochs_trained"] == [5] and res.config["patience"] == 2
    assert run.lr_curve == pytest.approx([1e-12] * 3 + [1e-13] * 2, rel=1e-9)
    assert len(run.test_curve) == 5 and len(set(run.test_curve)) == 1
    assert run.test_acc == run.test_curve[-1]  # the last accuracy is the one reported
    assert len(run.loss_curve) == 2  # the tail's; the stopped phase's losses stay inside the loop
    assert res.epochs_text() == "5 of 20" and str(res).endswith("(1 ConvNet run, 5 of 20 epochs)")


def _scripted_accuracy(monkeypatch, curve: list[float]) -> None:
    """The plateau hook sees ``curve`` as the test accuracy after each epoch (then the last value)."""
    values = iter(curve)
    monkeypatch.setattr(ranking, "accuracy", lambda net, x, y: (next(values, curve[-1]), 0.0))


def test_plateau_stop_runs_the_full_length_while_accuracy_rises(data: ImageData, monkeypatch) -> None:
    _scripted_accuracy(monkeypatch, [0.1 * k for k in range(1, 9)])
    res = ranking.evaluate_full_data(data, epochs=8, patience=2, lr=0.05, model_kwargs=TINY, device="cpu",
                                     progress=False)
    run = res.runs[0]
    assert run.epochs == 8 and run.test_curve == pytest.approx([0.1 * k for k in range(1, 9)])
    assert run.lr_curve == pytest.approx([0.05] * 6 + [0.005] * 2)  # the tail after epochs - patience
    assert len(run.loss_curve) == 8 and res.epochs_text() == "8"


def test_plateau_stop_needs_a_strictly_better_accuracy(data: ImageData, monkeypatch) -> None:
    """A tie with the best does not count as progress: best 0.5 at epoch 2, tied at 3 and 4, so the
    constant phase ends after epoch 4 (patience 2), though it could have run 10 epochs."""
    _scripted_accuracy(monkeypatch, [0.3, 0.5, 0.5, 0.5, 0.9, 0.9])
    res = ranking.evaluate_full_data(data, epochs=12, patience=2, lr=0.05, model_kwargs=TINY, device="cpu",
                                     progress=False)
    assert res.runs[0].epochs == 6 and res.runs[0].lr_curve == pytest.approx([0.05] * 4 + [0.005] * 2)


def test_full_data_result_is_cached_for_the_same_recipe(data: ImageData, tmp_path, monkeypatch) -> None:
    seen = _spy_training(monkeypatch)
    kwargs = dict(epochs=3, patience=1, model_kwargs=TINY, device="cpu", progress=False, cache=tmp_path)
    first = ranking.evaluate_full_data(data, **kwargs)
    assert len(seen) == 1 and len(list(tmp_path.glob("full-data-stripes-convnet-*.pt"))) == 1
    again = ranking.evaluate_full_data(data, **kwargs)
    assert len(seen) == 1, "the cached result is reused, nothing is trained"
    assert again.to_dict(runs=True) == first.to_dict(runs=True)
    ranking.evaluate_full_data(data, **{**kwargs, "compile": True})  # how to run, not what: still cached
    assert len(seen) == 1
    ranking.evaluate_full_data(data, **{**kwargs, "patience": None})  # another recipe trains again
    assert len(seen) == 2
    ranking.evaluate_full_data(data, **{**kwargs, "dsa": DSA()})
    ranking.evaluate_full_data(data, **{**kwargs, "dsa": DSA()})
    assert len(seen) == 4, "a recipe holding objects is never cached"


# --------------------------------------------------------------------------- DD-Ranking's scores


def _evaluated(mean: float, **config) -> ev.EvalResult:
    base = {"dataset": "stripes", "zca": False, "model": "convnet", "model_kwargs": {"width": 8}, "eval_on": "test",
            "eval_size": 40, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4, "lr_decay": True,
            "dsa": "color_crop", "train_transform": False, "epochs": 300, "num_images": 4, "labels": "hard",
            "lr": 0.03}
    return ev.EvalResult(mean, 0.01, [mean], {**base, **config})


def test_ranking_metrics_arithmetic_and_recipe_checks() -> None:
    distilled = _evaluated(0.30)
    random_real = _evaluated(0.20, baseline="random-real", lr=0.01)
    full = _evaluated(0.55, baseline="full", lr=0.01, epochs=40, num_images=48, patience=5)
    scores = ranking.ranking_metrics(distilled, random_real, full)
    assert scores["ior"] == pytest.approx(0.10) and scores["hlr"] == pytest.approx(0.25)
    assert (scores["distilled"], scores["random_real"], scores["full"]) == (0.30, 0.20, 0.55)
    worse = ranking.ranking_metrics(_evaluated(0.15), random_real, full)
    assert worse["ior"] == pytest.approx(-0.05) and worse["hlr"] == pytest.approx(0.40)

    with pytest.raises(ValueError, match="epochs 300 vs 200"):
        ranking.ranking_metrics(distilled, _evaluated(0.2, baseline="random-real", epochs=200), full)
    with pytest.raises(ValueError, match="num_images 4 vs 8"):
        ranking.ranking_metrics(distilled, _evaluated(0.2, baseline="random-real", num_images=8), full)
    with pytest.raises(ValueError, match="full data.*model_kwargs"):
        ranking.ranking_metrics(distilled, random_real, _evaluated(0.5, baseline="full", model_kwargs={"width": 32}))
    with pytest.raises(ValueError, match="dsa"):
        ranking.ranking_metrics(distilled, random_real, _evaluated(0.5, baseline="full", dsa=None))
    with pytest.raises(ValueError, match="evaluate_random_real"):
        ranking.ranking_metrics(distilled, full, random_real)
    with pytest.raises(ValueError, match="evaluate_full_data"):
        ranking.ranking_metrics(distilled, random_real, _evaluated(0.5))
    with pytest.raises(ValueError, match="hard labels"):
        ranking.ranking_metrics(_evaluated(0.4, labels="soft"), random_real, full)


def test_ranking_metrics_accept_the_kits_own_evaluations(data: ImageData) -> None:
    """The configs the evaluation functions write are comparable as they are (learning rates may differ)."""
    x, y = small_set(data, per_class=1)
    common = dict(model_kwargs=TINY, device="cpu", progress=False, num_runs=1)
    distilled = ev.evaluate_set(x, y, data, lr=0.03, epochs=2, **common)
    random_real = ev.evaluate_random_real(data, 1, lr=0.01, epochs=2, **common)
    full = ranking.evaluate_full_data(data, epochs=3, patience=1, **common)
    scores = ranking.ranking_metrics(distilled, random_real, full)
    assert scores["ior"] == distilled.mean - random_real.mean and scores["hlr"] == full.mean - distilled.mean
    longer = ev.evaluate_random_real(data, 1, lr=0.01, epochs=3, **common)
    with pytest.raises(ValueError, match="epochs"):
        ranking.ranking_metrics(distilled, longer, full)


def test_cross_architecture_returns_one_result_per_model(data: ImageData) -> None:
    x, y = small_set(data)
    out = ev.evaluate_cross_architecture(x, y, data, models=("convnetd1", "mlp"), num_runs=1, epochs=1,
                                         device="cpu", progress=False)
    assert list(out) == ["convnetd1", "mlp"] and all(0 <= r.mean <= 1 for r in out.values())


def test_validation_split_is_disjoint_balanced_and_used_for_evaluation(data: ImageData) -> None:
    train_part, val_part = ev.split_validation(data, per_class=4, seed=0)
    kept, held = tagged_index(train_part.train_images), tagged_index(val_part.test_images)
    assert not set(kept) & set(held)
    assert sorted(kept + held) == list(range(data.train_images.shape[0]))
    assert torch.bincount(val_part.test_labels, minlength=4).tolist() == [4, 4, 4, 4]
    assert torch.equal(data.train_labels[held], val_part.test_labels)
    assert torch.equal(train_part.test_images, data.test_images)
    assert torch.equal(val_part.train_images, train_part.train_images)
    again, _ = ev.split_validation(data, per_class=4, seed=0)
    other, _ = ev.split_validation(data, per_class=4, seed=1)
    assert tagged_index(again.train_images) == kept and tagged_index(other.train_images) != kept
    with pytest.raises(ValueError, match="per_class"):
        ev.split_validation(data, per_class=12, seed=0)

    # eval_on=val_part tests on the held-out images; a tuple does the same
    x, y = ev.random_real_subset(train_part, 2, seed=0)
    kwargs = dict(epochs=2, model_kwargs=TINY, device="cpu", seed=1)
    on_val = ev.train_and_test("convnet", x, y, train_part, eval_on=val_part, **kwargs)
    on_tuple = ev.train_and_test("convnet", x, y, train_part,
                                 eval_on=(val_part.test_images, val_part.test_labels), **kwargs)
    assert on_val.test_acc == on_tuple.test_acc
    assert (on_val.test_acc * 16) == pytest.approx(round(on_val.test_acc * 16))  # 16 validation images


# --------------------------------------------------------------------------- released tensors


def test_load_released_checks_shapes_and_refuses_pickles(data: ImageData, tmp_path) -> None:
    images = torch.randn(8, 3, 16, 16, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(2)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(labels, tmp_path / "labels_best.pt")
    x, y = released.load_released(tmp_path / "images_best.pt", tmp_path / "labels_best.pt", data)
    assert torch.equal(x, images.detach()) and torch.equal(y, labels) and not x.requires_grad

    torch.save(torch.randn(8, 1, 16, 16), tmp_path / "gray.pt")
    with pytest.raises(ValueError, match="1x16x16 but stripes is 3x16x16"):
        released.load_released(tmp_path / "gray.pt", tmp_path / "labels_best.pt", data)
    torch.save(labels + 4, tmp_path / "labels_far.pt")
    with pytest.raises(ValueError, match="classes"):
        released.load_released(tmp_path / "images_best.pt", tmp_path / "labels_far.pt", data)
    torch.save(labels[:5], tmp_path / "labels_short.pt")
    with pytest.raises(ValueError, match="8 images but"):
        released.load_released(tmp_path / "images_best.pt", tmp_path / "labels_short.pt")
    torch.save(labels.float(), tmp_path / "labels_float.pt")
    with pytest.raises(ValueError, match="integer"):
        released.load_released(tmp_path / "images_best.pt", tmp_path / "labels_float.pt")
    torch.save(ev.RunResult(0.5, 0.5, 1.0, 0, "convnet", 1), tmp_path / "pickled.pt")  # an arbitrary object
    with pytest.raises(CorruptFileError):
        released.load_released(tmp_path / "pickled.pt", tmp_path / "labels_best.pt", data)


# --------------------------------------------------------------------------- command line


def test_cli_evaluates_a_set_file_and_prints_json(tmp_path, capsys) -> None:
    from mttlib.data import load_dataset

    mini = load_dataset("cifar10-mini")
    x, y = ev.random_real_subset(mini, 1, seed=0)
    path = tmp_path / "set.pt"
    atomic_save({"images": x, "labels": y, "syn_lr": torch.tensor(0.02),
                 "config": {"dataset": "cifar10-mini", "zca": False}}, path)
    code = cli.main(["evaluate", "--set", str(path), "--models", "mlp", "--runs", "2", "--epochs", "2", "--json",
                   "--no-progress", "--device", "cpu"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["mode"] == "set" and out["dataset"] == "cifar10-mini"
    assert out["lr"] == pytest.approx(0.02)
    result = out["results"]["mlp"]
    assert len(result["accuracies"]) == 2 and result["config"]["num_images"] == 10
    assert result["config"]["eval_size"] == mini.test_images.shape[0]

    # a set file with no learned lr needs --lr
    atomic_save({"images": x, "labels": y, "config": {"dataset": "cifar10-mini"}}, tmp_path / "nolr.pt")
    assert 2 == cli.main(["evaluate", "--set", str(tmp_path / "nolr.pt"), "--json", "--no-progress"])


def test_cli_full_baseline_trains_the_whole_split_with_the_plateau_schedule(capsys) -> None:
    code = cli.main(["evaluate", "--baseline", "full", "--dataset", "cifar10-mini", "--models", "mlp", "--epochs", "3",
                     "--json", "--no-progress", "--device", "cpu"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]["mlp"]
    assert result["config"]["baseline"] == "full" and result["config"]["num_images"] == 5000
    assert result["config"]["patience"] == 2 and result["config"]["epochs_trained"] == [3]  # 1 at lr, 2 decayed


def _spy_training(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record the (train, test) inputs of every network the evaluation trains."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = ev._train_one

    def spy(recipe, x, y, data, x_eval, y_eval, *args):
        seen.append((x.detach().clone(), x_eval.detach().clone()))
        return real(recipe, x, y, data, x_eval, y_eval, *args)

    monkeypatch.setattr(ev, "_train_one", spy)
    return seen


def _one_real_per_class(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training image of each class, as uint8 pixels, with its label."""
    idx = torch.stack([(data.train_labels == c).nonzero()[0, 0] for c in range(data.num_classes)])
    return data.train_images[idx], data.train_labels[idx].clone()


def _relative(a: torch.Tensor, b) -> float:
    a = a.reshape(len(a), -1).double()
    b = torch.as_tensor(b, dtype=torch.float64).reshape(len(a), -1)
    return float((a - b).norm() / b.norm())


def test_released_zca_set_is_evaluated_in_the_references_space(reference_zca, tmp_path, monkeypatch,
                                                                 capsys) -> None:
    whiten, plain = reference_zca
    x, y = _one_real_per_class(plain)
    # a "released" set made the reference's way: [0, 1] pixels whitened by its ZCA, float32
    atomic_save(torch.from_numpy(whiten(x)).float().reshape(x.shape), tmp_path / "images_best.pt")
    atomic_save(y.clone(), tmp_path / "labels_best.pt")
    seen = _spy_training(monkeypatch)
    code = cli.main(["evaluate", "--released-images", str(tmp_path / "images_best.pt"), "--released-labels",
                   str(tmp_path / "labels_best.pt"), "--lr", "0.01", "--dataset", "cifar10-mini", "--zca",
                   "--models", "convnet", "--runs", "1", "--epochs", "1", "--json", "--no-progress",
                   "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    (train_x, test_x), = seen
    from mttlib.data import load_dataset

    in_kit = load_dataset("cifar10-mini", zca=True)
    # the networks train on exactly what the kit's own ZCA path makes of the same pixels ...
    assert _relative(train_x, in_kit.preprocess(x)) < 1e-3
    # ... and are tested on the test split whitened the reference's way
    assert _relative(test_x, whiten(plain.test_images)) < 1e-3


def test_released_plain_set_uses_the_references_normalisation(tmp_path, monkeypatch, capsys) -> None:
    from mttlib.data import load_dataset

    mini = load_dataset("cifar10-mini")
    x, y = _one_real_per_class(mini)
    mean = torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010], dtype=torch.float64).view(1, 3, 1, 1)
    assert tuple(mini.mean) != tuple(mean.flatten().tolist())  # the embedded set's own statistics differ
    atomic_save(((x.double() / 255 - mean) / std).float(), tmp_path / "images_best.pt")
    atomic_save(y.clone(), tmp_path / "labels_best.pt")
    seen = _spy_training(monkeypatch)
    code = cli.main(["evaluate", "--released-images", str(tmp_path / "images_best.pt"), "--released-labels",
                   str(tmp_path / "labels_best.pt"), "--lr", "0.01", "--dataset", "cifar10-mini",
                   "--models", "convnet", "--runs", "1", "--epochs", "1", "--json", "--no-progress",
                   "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    (train_x, test_x), = seen
    space = released.released_space(mini)
    assert _relative(train_x, space.preprocess(x)) < 1e-6
    assert _relative(test_x, (mini.test_images.double() / 255 - mean) / std) < 1e-6
    # CIFAR-100's released sets live in CIFAR-10's normalisation, as the reference made them
    assert released.REFERENCE_NORMALISATION["cifar100"] == released.REFERENCE_NORMALISATION["cifar10"]


def test_set_distilled_with_the_old_zca_is_refused(tmp_path, capsys) -> None:
    x = torch.zeros(10, 3, 32, 32)
    y = torch.arange(10)
    path = tmp_path / "old.pt"
    atomic_save({"images": x, "labels": y, "syn_lr": 0.01, "config": {"dataset": "cifar10-mini", "zca": True}},
                path)
    code = cli.main(["evaluate", "--set", str(path), "--models", "convnet", "--runs", "1", "--epochs", "1", "--no-progress"])
    assert code == 2
    assert "another recipe" in capsys.readouterr().err

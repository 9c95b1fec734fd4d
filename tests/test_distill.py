"""Tests of mttlib.distill: exact meta-gradients, the batch source, the loop, its files.

Everything runs on tiny fakes: a ConvNet of width 6 on 8x8 images of 3 classes, and expert
trajectories made of a few SGD steps on random data (no trained experts needed).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mttlib import distill as D, run, matching, memory
from mttlib.augment import DSA
from mttlib.data import ImageData
from mttlib.trajectory import Trajectory
from mttlib.io import CorruptFileError, atomic_save, safe_load
from mttlib.models import FunctionalModel, make_model

CLASSES, SIZE, IPC = 3, 8, 2
MODEL_KW = {"width": 6, "depth": 2}


def fake_data(seed: int = 0, per_class: int = 6) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    n = CLASSES * per_class
    labels = torch.arange(CLASSES).repeat(per_class)
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return ImageData(name="fake", train_images=images, train_labels=labels, test_images=images[:6],
                     test_labels=labels[:6], classes=[f"c{i}" for i in range(CLASSES)],
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def tiny_model(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return make_model("convnet", 3, CLASSES, SIZE, **{**MODEL_KW, **kw}).to(dtype)


def fake_experts(num: int = 2, epochs: int = 4, **model_kw) -> list[Trajectory]:
    """Trajectories of a few plain SGD steps on random data: snapshots after every 'epoch'."""
    out = []
    for k in range(num):
        torch.manual_seed(100 + k)
        model = make_model("convnet", 3, CLASSES, SIZE, **{**MODEL_KW, **model_kw})
        fm = FunctionalModel(model)
        theta = fm.flatten()
        x, y = torch.randn(24, 3, SIZE, SIZE), torch.randint(0, CLASSES, (24,))
        snaps = [theta.clone()]
        for _ in range(epochs):
            for _ in range(3):
                theta = theta.requires_grad_(True)
                g, = torch.autograd.grad(F.cross_entropy(fm(theta, x), y), theta)
                theta = (theta - 0.1 * g).detach()
            snaps.append(theta.clone())
        meta = {"index": k, "config": {"dataset": "fake", "zca": False, "model": "convnet",
                                       "model_kwargs": {**MODEL_KW, **model_kw}}}
        out.append(Trajectory(torch.stack(snaps), meta))
    return out


def problem(dtype=torch.float64, steps: int = 4, batch_syn: int | None = None, seed: int = 0):
    """A float64 meta-gradient problem: model, start/target, images, labels, plans, source."""
    fm = FunctionalModel(tiny_model(dtype))
    traj = fake_experts(1)[0]
    start, target = traj[1].to(dtype), traj[3].to(dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=g, dtype=dtype)
    y = D.class_major_labels(CLASSES, IPC)
    source = matching.ImageBatchSource(len(x), SIZE, batch_syn, DSA())
    plans = source.plans(steps, g)
    return fm, start, target, x, y, plans, source


def config(**kw) -> D.DistillConfig:
    base = dict(dataset="fake", ipc=IPC, model="convnet", model_kwargs=dict(MODEL_KW), syn_steps=3,
                expert_epochs=2, max_start_epoch=2, lr_img=10.0, lr_lr=1e-4, lr_teacher=0.01, iterations=4,
                checkpoint_every=2, snapshot_every=2, strategy="recompute")
    base.update(kw)
    return D.DistillConfig(**base)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --- meta-gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_syn", [None, 4])
def test_strategies_give_the_same_gradient(batch_syn):
    fm, start, target, x, y, plans, source = problem(steps=5, batch_syn=batch_syn)
    ops = {p["dsa"].op for p in plans}
    assert len(ops) >= 2, "the test should see several DSA operations"
    lr = torch.tensor(0.05, dtype=torch.float64)
    l1, gx1, glr1 = matching.meta_gradient(fm, start, target, x, y, lr, plans, source, "unroll")
    l2, gx2, glr2 = matching.meta_gradient(fm, start, target, x, y, lr, plans, source, "recompute")
    assert gx1.shape == x.shape and glr1.shape == ()
    assert gx1.norm() > 0 and glr1.abs() > 0
    assert abs(float(l1 - l2)) <= 1e-12 * float(l1)
    assert rel(gx2, gx1) < 1e-8
    assert abs(float(glr2 - glr1)) < 1e-8 * abs(float(glr1))


def test_gradients_match_finite_differences():
    fm, start, target, x, y, plans, source = problem(steps=4, batch_syn=4)
    lr = torch.tensor(0.05, dtype=torch.float64)

    def loss(images, step):
        return float(matching.meta_gradient(fm, start, target, images, y, step, plans, source, "unroll")[0])

    _, gx, glr = matching.meta_gradient(fm, start, target, x, y, lr, plans, source, "recompute")
    g = torch.Generator().manual_seed(3)
    eps = 1e-5
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        v /= v.norm()
        fd = (loss(x + eps * v, lr) - loss(x - eps * v, lr)) / (2 * eps)
        assert fd == pytest.approx(float((gx * v).sum()), rel=1e-5, abs=1e-9)
    fd_lr = (loss(x, lr + eps) - loss(x, lr - eps)) / (2 * eps)
    assert fd_lr == pytest.approx(float(glr), rel=1e-5)


def test_loss_equals_a_plain_training_loop():
    """Independent check: an nn.Module trained by torch.optim.SGD on the same batches."""
    fm, start, target, x, y, plans, source = problem(steps=4, batch_syn=4)
    lr = 0.05
    model = tiny_model(torch.float64)
    torch.nn.utils.vector_to_parameters(start.clone(), model.parameters())  # (it aliases the vector)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for plan in plans:
        xb, yb = source.batch(x, y, plan)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    end = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    expected = float(((end - target) ** 2).sum() / ((start - target) ** 2).sum())
    path = matching.student_trajectory(fm, start, x, y, lr, plans, source)
    assert len(path) == len(plans) + 1 and torch.equal(path[0], start)
    assert torch.allclose(path[-1], end, rtol=1e-12, atol=1e-14)
    for strategy in matching.STRATEGIES:
        got = float(matching.meta_gradient(fm, start, target, x, y, lr, plans, source, strategy)[0])
        assert got == pytest.approx(expected, rel=1e-10)
    assert float(matching.matching_loss(start, start, target)) == 1.0


def test_meta_gradient_rejects_bad_input():
    fm, start, target, x, y, plans, source = problem(steps=2)
    with pytest.raises(ValueError, match="strategy"):
        matching.meta_gradient(fm, start, target, x, y, 0.1, plans, source, "magic")
    with pytest.raises(ValueError, match="flat parameter vectors"):
        matching.meta_gradient(fm, start[:-1], target[:-1], x, y, 0.1, plans, source)


# --- the batch source --------------------------------------------------------------------------


def test_batch_source_chunks_and_replay():
    source = matching.ImageBatchSource(10, SIZE, batch_syn=4, dsa=DSA())
    g = torch.Generator().manual_seed(0)
    plans = source.plans(6, g)
    sizes = [len(p["index"]) for p in plans]
    assert sizes == [4, 4, 2, 4, 4, 2]
    for epoch in (plans[:3], plans[3:]):  # every image exactly once per pass of chunks
        assert sorted(torch.cat([p["index"] for p in epoch]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat([p["index"] for p in plans[:3]]), torch.cat([p["index"] for p in plans[3:]]))
    # a new iteration starts a fresh permutation (no leftover chunk from the last one)
    assert [len(p["index"]) for p in source.plans(2, g)] == [4, 4]
    # the same generator state gives the same plans; the same plan gives the same batch
    again = source.plans(6, torch.Generator().manual_seed(0))
    assert all(torch.equal(a["index"], b["index"]) and a["dsa"].op == b["dsa"].op for a, b in zip(plans, again))
    x = torch.randn(10, 3, SIZE, SIZE, requires_grad=True)
    y = torch.arange(10) % CLASSES
    for a, b in zip(plans, again):
        xa, ya = source.batch(x, y, a)
        xb, yb = source.batch(x, y, b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ya, y[a["index"]])
    xa.sum().backward()  # differentiable in the synthetic images
    assert x.grad is not None
    # batch_syn=None: every step sees every image
    full = matching.ImageBatchSource(10, SIZE, None, None).plans(3, g)
    assert all(sorted(p["index"].tolist()) == list(range(10)) for p in full)


# --- initialisation ----------------------------------------------------------------------------


def test_init_real_picks_real_images_of_each_class():
    data = fake_data()
    images, labels = D.init_synthetic(data, IPC, "real", torch.Generator().manual_seed(0))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    real = data.preprocess(data.train_images)
    for img, lab in zip(images, labels):
        match = [(torch.equal(img, r), int(c)) for r, c in zip(real, data.train_labels)]
        assert (True, int(lab)) in match, "each synthetic image is a real image of its class"
    assert len({tuple(img.flatten()[:5].tolist()) for img in images}) == len(images), "distinct picks"
    noise, _ = D.init_synthetic(data, 50, "noise", torch.Generator().manual_seed(0))  # noise needs no real images
    assert noise.shape == (CLASSES * 50, 3, SIZE, SIZE)
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    with pytest.raises(ValueError, match="only 6 training images"):
        D.init_synthetic(data, 7, "real")


# --- the loop ----------------------------------------------------------------------------------


def test_one_iteration_is_sgd_with_momentum_half():
    data, experts = fake_data(), fake_experts()
    cfg = config(strategy="unroll", lr_img=3.0, lr_lr=1e-4)
    run, ref = D.Distiller(cfg, experts, data), D.Distiller(cfg, experts, data)
    x0, lr0 = run.images.detach().clone(), run.syn_lr.detach().clone()

    def reference_gradient(images, step):
        # the reference replays the same draws and computes the gradient with the other strategy
        draw = ref.draw()
        start, target = ref.segment(draw)
        _, gx, glr = matching.meta_gradient(ref.fm, start, target, images, ref.labels, step, draw.plans, ref.source,
                                     "recompute")
        return gx, glr

    g1, l1 = reference_gradient(x0, lr0)
    run.step()
    x1, lr1 = run.images.detach().clone(), run.syn_lr.detach().clone()
    assert float(l1) != 0 and not torch.equal(x1, x0)
    assert torch.allclose(x1, x0 - 3.0 * g1, rtol=1e-5, atol=1e-7)  # first step: plain SGD
    # the reference gradient comes from the other strategy: equal up to float32 round-off
    assert float(lr1) == pytest.approx(float(lr0) - 1e-4 * float(l1), rel=1e-5)
    g2, l2 = reference_gradient(x1, lr1)
    run.step()
    # second step: the momentum buffer is 0.5 * g1 + g2
    assert torch.allclose(run.images.detach(), x1 - 3.0 * (0.5 * g1 + g2), rtol=1e-5, atol=1e-7)
    assert float(run.syn_lr.detach()) == pytest.approx(float(lr1) - 1e-4 * (0.5 * float(l1) + float(l2)), rel=1e-5)
    assert [m["iteration"] for m in run.metrics] == [0, 1]


def test_config_and_experts_are_checked():
    data = fake_data()
    with pytest.raises(ValueError, match="at least 5 epochs"):
        D.Distiller(config(max_start_epoch=4, expert_epochs=2), fake_experts(epochs=4), data)
    with pytest.raises(ValueError, match="parameters"):
        D.Distiller(config(model_kwargs={"width": 5, "depth": 2}), fake_experts(), data)
    with pytest.raises(ValueError, match="lr_img"):
        config(lr_img=-1.0)
    with pytest.raises(ValueError, match="zca"):
        D.Distiller(config(zca=True), fake_experts(), data)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outputs_are_written(tmp_path):
    data, experts = fake_data(), fake_experts()
    result = run.distill(config(), experts, data, tmp_path, progress=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["config"]["ipc"] == IPC and cfg["data"]["name"] == "fake" and "torch" in cfg["versions"]
    assert cfg["experts"]["count"] == 2 and cfg["seeds"]["seed"] == 0
    distilled = torch.load(tmp_path / "distilled.pt", weights_only=True)
    assert torch.equal(distilled["images"], result.images) and distilled["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert distilled["syn_lr"] == result.syn_lr and distilled["config"]["syn_steps"] == 3
    lines = _lines(tmp_path / "metrics.jsonl")
    assert [m["iteration"] for m in lines] == [0, 1, 2, 3]
    assert {"iteration", "loss", "syn_lr", "start_epoch", "expert", "seconds"} <= set(lines[0])
    assert all(0 <= m["start_epoch"] < 2 and m["expert"] in (0, 1) for m in lines)
    assert safe_load(tmp_path / "checkpoint.pt")["iteration"] == 4
    snaps = run.load_snapshots(tmp_path)
    assert [i for i, _ in snaps] == [0, 2, 4]
    assert torch.allclose(snaps[-1][1], result.images, atol=1e-2, rtol=1e-2)
    from PIL import Image

    from mttlib.viz import distillation_gif

    gif = distillation_gif(tmp_path, data, tmp_path / "anim.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 3
    with pytest.raises(FileExistsError, match="resume"):
        run.distill(config(), experts, data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="syn_steps"):
        run.distill(config(syn_steps=4), experts, data, tmp_path, progress=False, resume=True)


def _refused(path) -> str:
    with pytest.raises(CorruptFileError) as caught:
        run.load_distilled(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_load_distilled_refuses_what_is_not_a_set(tmp_path):
    good = {"images": torch.zeros(3, 3, 4, 4), "labels": torch.tensor([0, 1, 2]), "syn_lr": torch.tensor(0.01),
            "config": {"dataset": "fake"}, "soft_labels": torch.full((3, 3), 1 / 3)}
    atomic_save(good, tmp_path / "good.pt")
    assert run.load_distilled(tmp_path / "good.pt")["syn_lr"] == pytest.approx(0.01)  # a number, not a tensor
    bad = {"images must be a float tensor [N, C, H, W], it holds float32 [7, 5]":
           {"images": torch.zeros(7, 5), "labels": torch.arange(3)},
           "labels must be int64 class indices [3] (one per image), it holds int64 [2]":
           {"labels": torch.tensor([0, 1])},
           "labels must be class indices (0 or more), they run -1..2": {"labels": torch.tensor([-1, 1, 2]),
                                                                       "soft_labels": None},
           "labels must be class indices (0..2, the soft labels' classes), they run 0..5":
           {"labels": torch.tensor([0, 1, 5])},
           "syn_lr must be one positive finite number, it holds float32 [2]": {"syn_lr": torch.tensor([0.01, 0.02])},
           "syn_lr must be one positive finite number, it holds -0.5": {"syn_lr": -0.5},
           "syn_lr must be one positive finite number, it holds nan": {"syn_lr": float("nan")},
           "its images hold NaN": {"images": torch.full((3, 3, 4, 4), float("nan"))},
           "images_ema must be float like the images": {"images_ema": torch.zeros(3, 3, 2, 2)},
           "it is not a dict with images and labels": {"images": None}}
    for i, (says, change) in enumerate(bad.items()):
        atomic_save({**good, **change} if "dict" not in says else [1, 2], tmp_path / f"{i}.pt")
        message = _refused(tmp_path / f"{i}.pt")
        assert message.startswith(f"{tmp_path / f'{i}.pt'} is not a distilled set as the kit writes it: {says}")
        assert message.endswith("Re-create it with `python -m mttlib distill`.")


def test_load_snapshots_refuses_a_frame_of_another_kind(tmp_path):
    frame = {"iteration": 0, "images": torch.zeros(2, 3, 4, 4).half(), "labels": torch.tensor([0, 1]), "syn_lr": 0.01}
    atomic_save(frame, tmp_path / "iter_000000.pt")
    atomic_save({**frame, "iteration": 2, "images": torch.zeros(2, 3, 5, 5)}, tmp_path / "iter_000002.pt")
    with pytest.raises(CorruptFileError, match=r"iter_000002\.pt holds images \[2, 3, 5, 5\] but iter_000000\.pt"):
        run.load_snapshots(tmp_path)
    atomic_save({**frame, "iteration": "two"}, tmp_path / "iter_000002.pt")
    with pytest.raises(CorruptFileError, match=r"iter_000002\.pt is not a distillation snapshot .* it holds "
                                               r"iteration 'two' and images float16 \[2, 3, 4, 4\]"):
        run.load_snapshots(tmp_path)
    atomic_save({**frame, "iteration": 2, "images": torch.zeros(2, 4)}, tmp_path / "iter_000002.pt")
    with pytest.raises(CorruptFileError, match=r"it holds iteration 2 and images float32 \[2, 4\]\. Move it"):
        run.load_snapshots(tmp_path)
    atomic_save({**frame, "iteration": 2}, tmp_path / "iter_000002.pt")
    assert [i for i, images in run.load_snapshots(tmp_path)] == [0, 2]


def test_resume_after_a_crash_is_bit_for_bit(tmp_path):
    data, experts = fake_data(), fake_experts()
    cfg = config(iterations=5, checkpoint_every=2)
    clean = run.distill(cfg, experts, data, tmp_path / "clean", progress=False)

    class Crash(Exception):
        pass

    def crash_after_third(m):
        if m["iteration"] == 2:  # iterations 0..2 done, the checkpoint holds 0..1
            raise Crash

    with pytest.raises(Crash):
        run.distill(cfg, experts, data, tmp_path / "run", progress=False, callback=crash_after_third)
    assert safe_load(tmp_path / "run" / "checkpoint.pt")["iteration"] == 2
    resumed = run.distill(cfg, experts, data, tmp_path / "run", progress=False, resume=True)
    assert torch.equal(resumed.images, clean.images)
    assert resumed.syn_lr == clean.syn_lr
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in _lines(tmp_path / "run" / "metrics.jsonl")]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"} for m in clean.metrics]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resumed_from_iteration"] == 2


def test_resume_refuses_a_run_made_from_other_experts(tmp_path):
    data = fake_data()
    cfg = config(iterations=4, checkpoint_every=2)
    run.distill(cfg.replace(iterations=2), fake_experts(epochs=4), data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="made from other experts \\(2 of 4 epochs, now 2 of 5"):
        run.distill(cfg, fake_experts(epochs=5), data, tmp_path, progress=False, resume=True)
    assert len(run.distill(cfg, fake_experts(epochs=4), data, tmp_path, progress=False, resume=True).metrics) == 4


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = fake_data()
    experts = fake_experts(norm="none")  # without normalisation huge pixels reach the logits
    cfg = config(model_kwargs={**MODEL_KW, "norm": "none"}, lr_img=1e12, iterations=6, checkpoint_every=1,
                 strategy="unroll")
    with pytest.raises(D.DistillationDiverged, match="Most likely lr_img=1e\\+12 is too high") as err:
        run.distill(cfg, experts, data, tmp_path, progress=False)
    state = safe_load(tmp_path / "checkpoint.pt")
    assert state["iteration"] >= 1 and f"iteration {state['iteration']}) is kept" in str(err.value)
    assert torch.isfinite(state["images"]).all() and float(state["syn_lr"]) > 0
    assert len(_lines(tmp_path / "metrics.jsonl")) == state["iteration"]
    # a step size that overshoots below zero points at lr_lr
    with pytest.raises(D.DistillationDiverged, match="syn_lr became .* Most likely lr_lr=10 "):
        run.distill(config(lr_lr=10.0), fake_experts(), data, tmp_path / "lr", progress=False)


def test_non_finite_loss_names_lr_img_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    data, experts = fake_data(), fake_experts()
    real = matching.meta_gradient
    calls = []

    def flaky(*args, **kwargs):
        loss, gx, glr = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), gx, glr) if len(calls) == 4 else (loss, gx, glr)

    monkeypatch.setattr(D, "meta_gradient", flaky)
    with pytest.raises(D.DistillationDiverged, match="loss is not finite at iteration 3.*lr_img=10"):
        run.distill(config(iterations=6, checkpoint_every=2), experts, data, tmp_path, progress=False)
    state = safe_load(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 2 and torch.isfinite(state["images"]).all()
    assert safe_load(tmp_path / "distilled.pt")["iteration"] == 2


# --- memory --------------------------------------------------------------------------------------


def test_memory_estimate_grows_with_steps_only_for_unroll():
    model = make_model("convnet", 3, 10, 32, width=16)
    shape = (3, 32, 32)
    unroll = [memory.estimate_memory(model, 10, shape, n, "unroll") for n in (10, 20, 30, 40)]
    recompute = [memory.estimate_memory(model, 10, shape, n, "recompute") for n in (10, 20, 30, 40)]
    step = memory.step_activation_bytes(model, 10, shape)
    steps = [b - a for a, b in zip(unroll, unroll[1:])]
    assert min(steps) > 0 and max(steps) - min(steps) <= 0.01 * min(steps)  # linear
    assert steps[0] >= 10 * step  # ten more steps keep ten more graphs
    assert recompute[-1] <= 1.1 * recompute[0] and recompute[0] < unroll[0] / 2
    assert memory.step_activation_bytes(model, 20, shape) > 1.5 * step  # grows with the batch


# --- command line --------------------------------------------------------------------------------


def test_cli_runs_resumes_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    import mttlib.cli
    import mttlib.experts

    data = fake_data()
    monkeypatch.setattr(mttlib.cli, "load_dataset", lambda name, root=None, zca=False: data)
    monkeypatch.setattr(mttlib.experts, "load_experts", lambda path: fake_experts(width=8, depth=None))
    args = ["--dataset", "cifar10-mini", "--ipc", "2", "--preset", "smoke", "--experts", str(tmp_path / "e"),
            "--out", str(tmp_path / "run"), "--no-progress", "--strategy", "unroll", "--lr-img", "50"]
    assert mttlib.cli.main(["distill", *args[:4], "--preset", "paper", *args[6:]]) == 2  # no paper row for it
    assert "no 'paper' preset" in capsys.readouterr().err
    args[3] = "1"
    assert mttlib.cli.main(["distill", *args]) == 0
    out = capsys.readouterr().out
    assert "unroll" in out and "recompute" in out and "GiB" in out and "<- this run" in out
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert cfg["strategy"] == "unroll" and cfg["lr_img"] == 50 and cfg["preset"] == "cifar10-mini/ipc1/smoke"
    assert len(_lines(tmp_path / "run" / "metrics.jsonl")) == 4
    assert mttlib.cli.main(["distill", *args]) == 2 and "--resume" in capsys.readouterr().err
    assert mttlib.cli.main(["distill", *args, "--resume", "--iterations", "6"]) == 0
    assert len(_lines(tmp_path / "run" / "metrics.jsonl")) == 6
    assert run.load_distilled(tmp_path / "run")["iteration"] == 6


def test_auto_strategy_follows_the_memory_budget():
    model = make_model("convnet", 3, 10, 32, width=16)
    need = memory.estimate_memory(model, 10, (3, 32, 32), 20, "unroll")
    total = memory._device_memory(torch.device("cpu"))
    assert memory.choose_strategy(model, 10, (3, 32, 32), 20, "cpu", budget=2 * need / total) == "unroll"
    assert memory.choose_strategy(model, 10, (3, 32, 32), 20, "cpu", budget=0.5 * need / total) == "recompute"
    run = D.Distiller(config(strategy="auto"), fake_experts(), fake_data())
    assert run.strategy == "unroll"  # a tiny problem fits easily


def test_auto_strategy_takes_unroll_whenever_it_fits_on_any_device(monkeypatch):
    # unroll was the faster strategy wherever both fit (a CPU at widths 32 and 128, an H200): memory decides
    model = make_model("convnet", 3, 10, 32, width=16)
    need = memory.estimate_memory(model, 10, (3, 32, 32), 20, "unroll")
    for device in ("cpu", "cuda"):
        monkeypatch.setattr(memory, "_device_memory", lambda device: 4 * need + 4)  # a quarter holds it
        assert memory.choose_strategy(model, 10, (3, 32, 32), 20, device) == "unroll"
        monkeypatch.setattr(memory, "_device_memory", lambda device: 4 * need - 4)
        assert memory.choose_strategy(model, 10, (3, 32, 32), 20, device) == "recompute"



def test_distilled_set_names_its_zca_recipe():
    from mttlib.zca import RECIPE, ZCA

    data = fake_data()
    data.zca = ZCA.fit(data.train_images.double() / 255, eps=0.1)
    experts = fake_experts()
    for traj in experts:
        traj.meta["config"]["zca"] = True
    blob = run._distilled(D.Distiller(config(zca=True), experts, data))
    assert blob["zca_recipe"] == RECIPE  # evaluation refuses sets of another whitening
    assert "zca_recipe" not in run._distilled(D.Distiller(config(), fake_experts(), fake_data()))


def test_expert_sampler_draws_every_start_epoch_below_the_bound_and_no_other():
    sampler = D.ExpertSampler(num_experts=3, max_start_epoch=4, seed=7)
    draws = [sampler.sample() for _ in range(400)]
    assert {e for e, _ in draws} == {0, 1, 2}
    assert {t for _, t in draws} == {0, 1, 2, 3}  # [0, max_start_epoch): 4 itself never
    window = [sampler.sample(2, 5)[1] for _ in range(200)]  # a start-epoch schedule's window
    assert set(window) == {2, 3, 4}
    again = D.ExpertSampler(num_experts=3, max_start_epoch=4, seed=7)
    assert [again.sample() for _ in range(400)] == draws  # seeded: the same sequence
    state = sampler.state_dict()
    resumed = D.ExpertSampler(num_experts=3, max_start_epoch=4, seed=0)
    resumed.load_state_dict(state)
    assert [resumed.sample() for _ in range(5)] == [sampler.sample() for _ in range(5)]
    with pytest.raises(ValueError, match="low < high"):
        sampler.sample(3, 3)


def test_the_target_is_the_snapshot_expert_epochs_after_the_start():
    experts = fake_experts(epochs=6)
    run = D.Distiller(config(expert_epochs=3, max_start_epoch=3), experts, fake_data())
    for _ in range(20):
        draw = run.draw()
        start, target = run.segment(draw)
        traj = experts[draw.expert]
        assert torch.equal(start, traj[draw.start_epoch].to(start))
        assert torch.equal(target, traj[draw.start_epoch + 3].to(target))  # start + expert_epochs, not +/- 1


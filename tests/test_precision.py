"""Mixed precision: ``precision="fp32"`` (the default) computes exactly what plain float32 code
computes; ``"bf16"`` runs the networks' forward under autocast and still returns float32
parameters and gradients, close in direction to float32's; ``"fp16"`` is CUDA's only.

The float32 references are written out here as plain PyTorch (no ``mttlib.train`` or
``mttlib.matching`` code), so a change that touched the float32 path would show as a difference.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mttlib import cli, matching
from mttlib.augment import DSA
from mttlib.data import ImageData, load_dataset
from mttlib.distill import DistillConfig, Distiller
from mttlib.experts import ExpertConfig
from mttlib.models import FunctionalModel, make_model
from mttlib.train import accuracy, autocast, check_precision, train
from mttlib.trajectory import Trajectory

CLASSES, SIZE = 3, 8


def tiny_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_model("convnet", 3, CLASSES, SIZE, width=6, depth=2).to(dtype)


def tiny_problem(steps: int = 3, dtype: torch.dtype = torch.float32):
    """A meta-gradient problem on random 8x8 images, with DSA."""
    fm = FunctionalModel(tiny_net(dtype=dtype))
    g = torch.Generator().manual_seed(1)
    start = fm.flatten()
    target = start + 0.05 * torch.randn(start.shape, generator=g, dtype=dtype)
    x = torch.randn(2 * CLASSES, 3, SIZE, SIZE, generator=g, dtype=dtype)
    y = torch.arange(CLASSES).repeat_interleave(2)
    source = matching.ImageBatchSource(len(x), SIZE, 4, DSA())
    return fm, start, target, x, y, source.plans(steps, g), source


@pytest.fixture(scope="module")
def cifar_problem():
    """A small fixed problem on real images: ConvNet width 16 on 32x32 cifar10-mini, 10 synthetic
    images, 4 student steps with DSA, towards where 10 float32 SGD steps on 200 real images go
    (nothing here changes it: the meta-gradient detaches its inputs)."""
    data = load_dataset("cifar10-mini")
    torch.manual_seed(0)
    fm = FunctionalModel(make_model("convnet", 3, 10, 32, width=16))
    start = fm.flatten()
    real = matching.ImageBatchSource(200, 32, 20, None)
    g = torch.Generator().manual_seed(0)
    xr, yr = data.preprocess(data.train_images[100:300]).float(), data.train_labels[100:300]
    target = matching.student_trajectory(fm, start, xr, yr, 0.01, real.plans(10, g), real)[-1]
    x, y = data.preprocess(data.train_images[:10]).float(), data.train_labels[:10]
    source = matching.ImageBatchSource(10, 32, None, DSA(data.dsa_strategy))
    return fm, start, target, x, y, source.plans(4, g), source


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


# --- float32 is unchanged ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fp32_training_is_bit_identical_to_a_plain_loop(dtype):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, SIZE, SIZE, generator=g, dtype=dtype), torch.randint(0, CLASSES, (40,), generator=g)
    net = tiny_net(dtype=dtype)  # the reference: the textbook loop, same batches
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    shuffle = torch.Generator().manual_seed(7)
    for _ in range(2):
        order = torch.randperm(40, generator=shuffle)
        for begin in range(0, 40, 16):
            idx = order[begin:begin + 16]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    expected = torch.cat([p.detach().flatten() for p in net.parameters()])
    for precision in (None, "fp32"):
        other = tiny_net(dtype=dtype)
        train(other, x, y, epochs=2, lr=0.05, batch_size=16, momentum=0.9, weight_decay=5e-4,
              shuffle=torch.Generator().manual_seed(7), **({} if precision is None else {"precision": precision}))
        assert torch.equal(torch.cat([p.detach().flatten() for p in other.parameters()]), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fp32_meta_gradient_is_bit_identical_to_a_plain_unroll(dtype):
    """``"fp32"`` leaves the computation alone, whatever the dtype of the problem."""
    fm, start, target, x, y, plans, source = tiny_problem(dtype=dtype)
    lr0 = torch.tensor(0.05, dtype=dtype)
    xr, lr = x.clone().requires_grad_(True), lr0.clone().requires_grad_(True)
    theta = start.clone().requires_grad_(True)
    for plan in plans:  # the paper's unroll, written out
        xb, yb = source.batch(xr, y, plan)
        g, = torch.autograd.grad(F.cross_entropy(fm(theta, xb), yb), theta, create_graph=True)
        theta = theta - lr * g
    loss = (theta - target).square().sum() / (start - target).square().sum()
    gx, glr = torch.autograd.grad(loss, [xr, lr])
    path = [start]
    for plan in plans:  # the student alone, without the graph
        xb, yb = source.batch(x, y, plan)
        theta = path[-1].clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(fm(theta, xb), yb), theta)
        path.append((theta - lr0 * g).detach())
    for kw in ({}, {"precision": "fp32"}):
        got = matching.meta_gradient(fm, start, target, x, y, lr0, plans, source, "unroll", **kw)
        assert torch.equal(got[0], loss.detach()) and torch.equal(got[1], gx) and torch.equal(got[2], glr)
        traj = matching.student_trajectory(fm, start, x, y, lr0, plans, source, **kw)
        assert all(torch.equal(a, b) for a, b in zip(traj, path))


# --- bfloat16 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", matching.STRATEGIES)
def test_bf16_meta_gradient_is_float32_and_points_the_same_way(strategy, cifar_problem):
    fm, start, target, x, y, plans, source = cifar_problem
    lr = torch.tensor(0.01)
    loss32, gx32, glr32 = matching.meta_gradient(fm, start, target, x, y, lr, plans, source, strategy)
    loss16, gx16, glr16 = matching.meta_gradient(fm, start, target, x, y, lr, plans, source, strategy,
                                                 precision="bf16")
    assert gx16.dtype == glr16.dtype == loss16.dtype == torch.float32
    assert gx16.shape == x.shape and torch.isfinite(gx16).all() and torch.isfinite(glr16)
    assert not torch.equal(gx16, gx32), "bf16 computed exactly what fp32 did: autocast was not on"
    cos = cosine(gx16, gx32)
    print(f"{strategy}: cosine(fp32, bf16 meta-gradient wrt images) = {cos:.5f}, "
          f"syn_lr gradient {float(glr32):.4g} vs {float(glr16):.4g}, loss {float(loss32):.5f} vs {float(loss16):.5f}")
    assert cos > 0.9
    assert float(glr16) == pytest.approx(float(glr32), rel=0.1)
    assert float(loss16) == pytest.approx(float(loss32), rel=0.05)


def test_bf16_training_keeps_float32_parameters_and_optimiser_state():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (32,), generator=g)
    finals = {}
    for precision in ("fp32", "bf16"):
        net = tiny_net()
        states = []
        history = train(net, x, y, epochs=2, lr=0.05, batch_size=16, momentum=0.9,
                        shuffle=torch.Generator().manual_seed(3), precision=precision,
                        on_epoch_end=lambda e, n, opt: states.extend(opt.state.values()))
        assert all(p.dtype == torch.float32 for p in net.parameters())
        assert all(s["momentum_buffer"].dtype == torch.float32 for s in states)
        assert all(torch.isfinite(torch.tensor(history.train_loss)))
        finals[precision] = torch.cat([p.detach().flatten() for p in net.parameters()])
    start = FunctionalModel(tiny_net()).flatten()
    assert not torch.equal(finals["bf16"], finals["fp32"])
    assert cosine(finals["bf16"] - start, finals["fp32"] - start) > 0.9


def test_compiled_training_matches_eager_training_up_to_rounding():
    """``compile=True`` fuses kernels (the sums run in another order) but trains the same network."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (40,), generator=g)
    finals, starts = {}, {}
    for compile in (False, True):
        net = tiny_net()
        starts[compile] = torch.cat([p.detach().flatten() for p in net.parameters()])
        history = train(net, x, y, epochs=2, lr=0.05, batch_size=16, momentum=0.9,  # 16, 16, 8: two batch sizes
                        shuffle=torch.Generator().manual_seed(3), compile=compile)
        assert all(torch.isfinite(torch.tensor(history.train_loss)))
        finals[compile] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert torch.equal(starts[False], starts[True])
    moved = (finals[False] - starts[False]).abs().max()
    assert moved > 1e-2 and (finals[True] - finals[False]).abs().max() < 1e-4 * max(1.0, float(moved))


def test_compile_is_how_to_run_not_what_an_expert_is():
    plain, compiled = ExpertConfig(dataset="cifar10-mini", model="convnet"), \
        ExpertConfig(dataset="cifar10-mini", model="convnet", compile=True)
    assert compiled.compile and plain.to_dict() == compiled.to_dict()  # same record, same folder
    assert "compile" not in plain.to_dict() and "precision" not in plain.to_dict()


def test_accuracy_builds_no_autograd_graph():
    """Test accuracy is measured after every epoch: it must not keep activations for a backward."""
    net, seen = tiny_net(), []
    net.register_forward_hook(lambda module, inputs, output: seen.append(output.requires_grad))
    x, y = torch.randn(6, 3, SIZE, SIZE), torch.arange(6) % CLASSES
    acc, loss = accuracy(net, x, y)
    assert seen == [False] and 0.0 <= acc <= 1.0 and loss > 0


def test_can_compile_needs_a_cpp_compiler_on_the_cpu(monkeypatch):
    from mttlib import train as T
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(T.shutil, "which", lambda name: None)
    assert not T.can_compile("cpu")
    monkeypatch.setattr(T.shutil, "which", lambda name: "/usr/bin/c++" if name == "c++" else None)
    assert T.can_compile("cpu")
    monkeypatch.setattr(T.sys, "platform", "win32")  # inductor wants MSVC there: the kit does not try
    assert not T.can_compile("cpu")
    assert not T.can_compile("cuda:0")  # compiling did not pay off on CUDA; its graph step is opt-in


def fake_run(precision: str, device: str = "cpu") -> Distiller:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    data = ImageData(name="fake", train_images=images, train_labels=torch.arange(CLASSES).repeat(4),
                     test_images=images[:3], test_labels=torch.arange(CLASSES), classes=["a", "b", "c"],
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    start = FunctionalModel(tiny_net()).flatten()
    walk = torch.cumsum(0.02 * torch.randn(3, start.numel(), generator=g), 0)
    expert = Trajectory(torch.cat([start[None], start[None] + walk]), {"config": {"zca": False}})
    config = DistillConfig(dataset="fake", ipc=2, model="convnet", model_kwargs={"width": 6, "depth": 2},
                           syn_steps=3, expert_epochs=2, max_start_epoch=1, iterations=2, lr_img=10.0,
                           strategy="recompute", precision=precision)
    return Distiller(config, [expert], data, device=device)


def test_distiller_in_bf16_keeps_its_state_float32():
    runs = {p: fake_run(p) for p in ("fp32", "bf16")}
    for run in runs.values():
        run.step()
        run.step()
        assert run.images.dtype == run.syn_lr.dtype == torch.float32
        assert all(s["momentum_buffer"].dtype == torch.float32 for s in run.opt_img.state.values())
    assert not torch.equal(runs["bf16"].images, runs["fp32"].images)
    assert DistillConfig.from_dict(runs["bf16"].config.to_dict()).precision == "bf16"


# --- refusals and the command line -------------------------------------------------------------


def test_unknown_precisions_are_refused_clearly():
    for bad in ("fp8", "float16", "BF16", None):
        with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
            check_precision(bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        DistillConfig(dataset="fake", ipc=1, precision="half")
    fm, start, target, x, y, plans, source = tiny_problem(1)
    with pytest.raises(ValueError, match="precision must be one of"):
        matching.meta_gradient(fm, start, target, x, y, 0.1, plans, source, precision="tf32")


def test_fp16_is_refused_on_the_cpu():
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        autocast("fp16", torch.device("cpu"))
    fm, start, target, x, y, plans, source = tiny_problem(1)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(tiny_net(), x, y, epochs=1, lr=0.1, shuffle=torch.Generator(), precision="fp16")


def test_fp16_is_refused_for_distillation_on_every_device_naming_bf16():
    fm, start, target, x, y, plans, source = tiny_problem(1)
    with pytest.raises(ValueError, match="not offered for distillation.*bf16"):
        matching.meta_gradient(fm, start, target, x, y, 0.1, plans, source, precision="fp16")
    with pytest.raises(ValueError, match="not offered for distillation.*bf16"):
        DistillConfig(dataset="fake", ipc=1, precision="fp16")


def test_the_command_line_has_a_precision_flag(capsys):
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    args = sub.choices["distill"].parse_args(["--precision", "bf16"])
    assert args.precision == "bf16"
    assert "precision" in {f.name for f in dataclasses.fields(DistillConfig)}
    assert cli.main(["distill", "--preset", "smoke", "--precision", "fp8"]) == 2
    assert "precision must be one of" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_precisions_give_float32_results_close_to_fp32(precision, cifar_problem):
    fm, start, target, x, y, plans, source = cifar_problem
    fm = FunctionalModel(copy.deepcopy(fm.module).cuda())  # the shared problem stays on the CPU
    start, target, x, y = start.cuda(), target.cuda(), x.cuda(), y.cuda()
    if precision == "bf16":  # fp16 is refused for the meta-gradient
        out = {p: matching.meta_gradient(fm, start, target, x, y, 0.01, plans, source, "recompute", precision=p)
               for p in ("fp32", precision)}
        assert all(t.dtype == torch.float32 and t.is_cuda for t in out[precision])
        cos = cosine(out[precision][1], out["fp32"][1])
        print(f"cuda {precision}: cosine with fp32 = {cos:.5f}")
        assert cos > 0.9
    net = tiny_net().cuda()
    xt, yt = torch.randn(32, 3, SIZE, SIZE, device="cuda"), torch.randint(0, CLASSES, (32,), device="cuda")
    history = train(net, xt, yt, epochs=2, lr=0.05, batch_size=16, shuffle=torch.Generator(), precision=precision)
    assert not history.diverged and all(p.dtype == torch.float32 for p in net.parameters())

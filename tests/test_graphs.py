"""The static meta-gradient behind CUDA graphs: the same gradient as the eager one, fresh inputs every call."""

import pytest
import torch

from mttlib.augment import DSA, OPS, apply_passes
from mttlib.graphs import StaticMetaGradient, can_capture
from mttlib.matching import ImageBatchSource, meta_gradient
from mttlib.models import FunctionalModel, make_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _setup(device="cpu", dtype=torch.float64, n=6, steps=4, seed=0):
    torch.manual_seed(seed)
    fm = FunctionalModel(make_model("convnet", 3, 3, 16, width=8, depth=2).to(device, dtype))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g, dtype=dtype).to(device)
    y = torch.arange(3).repeat_interleave(n // 3).to(device)
    source = ImageBatchSource(n, 16, 4, DSA())
    return fm, x, y, source, g


def _segment(fm, g):
    start = fm.flatten()
    return start, start + 0.01 * torch.randn(start.shape, generator=g, dtype=start.dtype).to(start.device)


@pytest.mark.parametrize("op", OPS)
def test_every_pass_with_identities_is_the_drawn_group_alone(op):
    dsa, x = DSA(op), torch.rand(3, 3, 9, 7, dtype=torch.float64)
    params = dsa.sample(3, (9, 7), torch.Generator().manual_seed(1))
    full = dsa.passes(params, (9, 7)).every(3, (9, 7))
    assert full.color is not None and full.theta is not None and full.keep is not None
    assert torch.allclose(apply_passes(x, full), dsa.apply(x, params), rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", ["unroll", "recompute"])
def test_static_meta_gradient_equals_the_eager_one_call_after_call(strategy):
    fm, x, y, source, g = _setup()
    lr = torch.tensor(0.02, dtype=torch.float64)
    static = StaticMetaGradient(fm, source, x, y, lr, num_steps=4, strategy=strategy)
    for _ in range(3):  # new segments and plans each call; the pixels change in place between calls
        start, target = _segment(fm, g)
        plans = source.plans(4, g)
        got = static(start, target, plans)
        want = meta_gradient(fm, start, target, x, y, lr, plans, source, strategy)
        for a, b in zip(got, want):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        with torch.no_grad():
            x.add_(0.1 * got[1])
            lr.mul_(1.1)


def test_static_meta_gradient_refuses_other_shapes():
    fm, x, y, source, g = _setup()
    static = StaticMetaGradient(fm, source, x, y, torch.tensor(0.02, dtype=torch.float64), num_steps=4,
                                strategy="unroll")
    start, target = _segment(fm, g)
    static(start, target, source.plans(4, g))
    with pytest.raises(ValueError, match="4 steps"):
        static(start, target, source.plans(3, g))
    other = ImageBatchSource(6, 16, 3, DSA())
    with pytest.raises(ValueError, match="same shapes"):
        static(start, target, other.plans(4, g))


def test_can_capture_names_why_not():
    fm, x, y, source, _ = _setup()
    assert "CUDA device" in can_capture(torch.device("cpu"), source, y, "fp32")
    cuda_dev = torch.device("cuda", 0)
    assert "soft labels" in can_capture(cuda_dev, source, torch.zeros(6, 3), "fp32")
    assert "float32" in can_capture(cuda_dev, source, y, "bf16")
    assert "texture" in can_capture(cuda_dev, object(), y, "fp32")
    assert can_capture(cuda_dev, source, y, "fp32") == ""


@cuda
@pytest.mark.parametrize("strategy", ["unroll", "recompute"])
def test_cuda_graph_meta_gradient_equals_the_eager_one(strategy):
    fm, x, y, source, g = _setup("cuda", torch.float32)
    lr = torch.tensor(0.02, device="cuda")
    static = StaticMetaGradient(fm, source, x, y, lr, num_steps=4, strategy=strategy)
    for _ in range(3):
        start, target = _segment(fm, g)
        plans = source.plans(4, g)
        got = static(start, target, plans)
        want = meta_gradient(fm, start, target, x, y, lr, plans, source, strategy)
        assert static.graph is not None
        assert torch.allclose(got[0], want[0], rtol=1e-4, atol=1e-6)
        cosine = torch.nn.functional.cosine_similarity(got[1].flatten(), want[1].flatten(), dim=0)
        assert cosine > 0.9999 and torch.allclose(got[2], want[2], rtol=1e-3, atol=1e-7)
        with torch.no_grad():
            x.add_(0.1 * got[1])


# --- plain training as a graphed step ---------------------------------------------------------------------------

def _training(device, dtype, graphed, momentum=0.9, weight_decay=5e-4, lr_decay=True, sys_dsa="color_crop_cutout_flip_scale_rotate"):
    from mttlib.train import GraphedStep, _train_graphed, train

    torch.manual_seed(0)
    net = make_model("convnet", 3, 3, 16, width=8, depth=2).to(device, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, 16, 16, generator=g, dtype=dtype).to(device)
    y = torch.randint(0, 3, (40,), generator=g).to(device)
    recorded = []
    kw = dict(epochs=4, lr=0.05, batch_size=16, momentum=momentum, weight_decay=weight_decay, lr_decay=lr_decay,
              dsa=DSA(sys_dsa) if sys_dsa else None, shuffle=torch.Generator().manual_seed(2), augment=torch.Generator().manual_seed(3),
              on_epoch_end=lambda e, n, o: recorded.append(FunctionalModel(n).flatten()))
    if graphed:
        step = GraphedStep(net, x, y, 16, kw["lr"], momentum, weight_decay, kw["dsa"])
        history = _train_graphed(step, 4, kw["lr"], 2 if lr_decay else None, kw["shuffle"], kw["augment"],
                                 torch.optim.SGD(net.parameters(), lr=kw["lr"]), kw["on_epoch_end"], None)
    else:
        history = train(net, x, y, **kw)
    return history, recorded


@pytest.mark.parametrize("momentum,weight_decay,lr_decay", [(0.9, 5e-4, True), (0.0, 0.0, False)])
def test_graphed_step_trains_as_the_eager_loop(momentum, weight_decay, lr_decay):
    eager, snaps_eager = _training("cpu", torch.float64, False, momentum, weight_decay, lr_decay)
    graphed, snaps_graphed = _training("cpu", torch.float64, True, momentum, weight_decay, lr_decay)
    assert eager.lr == graphed.lr and len(snaps_eager) == len(snaps_graphed) == 4
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-11) for a, b in zip(snaps_eager, snaps_graphed))
    assert all(abs(a - b) < 1e-9 for a, b in zip(eager.train_loss, graphed.train_loss))
    assert eager.train_acc == graphed.train_acc


@cuda
def test_cuda_graphed_training_follows_the_eager_loop():
    eager, snaps_eager = _training("cuda", torch.float32, False)
    graphed, snaps_graphed = _training("cuda", torch.float32, True)
    assert eager.lr == graphed.lr
    for a, b in zip(snaps_eager, snaps_graphed):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), float((a - b).abs().max())


# --- the distillation loop with and without the graph -----------------------------------------------------------

def _distiller(device, cuda_graph, strategy="unroll"):
    from test_distill import config, fake_data, fake_experts

    from mttlib.distill import Distiller

    return Distiller(config(strategy=strategy, cuda_graph=cuda_graph), fake_experts(), fake_data(), device=device)


def test_on_the_cpu_the_loop_says_why_it_has_no_graph_and_computes_the_same():
    on, off = _distiller("cpu", True), _distiller("cpu", False)
    for _ in range(3):
        a, b = on.step(), off.step()
        assert a["loss"] == b["loss"]
    assert on.capture is False and "CUDA device" in on.capture_note and off.capture_note == "cuda_graph is off"
    assert torch.equal(on.images, off.images)


@cuda
@pytest.mark.parametrize("strategy", ["unroll", "recompute"])
def test_cuda_graph_loop_follows_the_eager_loop(strategy):
    on, off = _distiller("cuda", True, strategy), _distiller("cuda", False, strategy)
    for _ in range(3):
        a, b = on.step(), off.step()
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert on.capture and on.capture.graph, on.capture_note
    assert torch.allclose(on.images, off.images, rtol=1e-3, atol=1e-4)


# --- operator calls -------------------------------------------------------------------------------------------

def test_a_student_step_makes_at_most_450_operator_calls_at_the_paper_ipc10_shape():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_ops
    finally:
        sys.path.pop(0)
    unroll = bench_ops.count("unroll", width=8, steps=30)  # the paper's 30 steps (a few calls per iteration are shared)
    assert unroll["calls_per_step"] <= 450, unroll  # 739 before the layers were written out
    recompute = bench_ops.count("recompute", width=8, steps=30)
    assert recompute["calls_per_step"] <= 580, recompute  # 888 before; a second forward is its price


def test_bench_layers_compares_the_kit_layers_with_pytorchs_own_on_one_meta_gradient():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_layers
    finally:
        sys.path.pop(0)
    r = bench_layers.measure(width=4, steps=3, rounds=2, strategy="unroll")
    assert r["calls_per_step"]["kit"] < 0.8 * r["calls_per_step"]["pytorch"], r  # the point of the layers
    assert r["grad_images_rel_diff"] < 1e-3, r  # the same meta-gradient up to float32 rounding
    assert all(v > 0 for v in r["s_median"].values())
    model = bench_layers.make_model("convnet", 3, 10, 32, width=4)
    bench_layers.swap(model, "pytorch")
    assert not any(type(m).__module__ == "mttlib.layers" for m in model.modules())
    bench_layers.swap(model, "kit")
    assert sum(type(m).__module__ == "mttlib.layers" for m in model.modules()) == 7  # 3 norms, 3 pools, classifier

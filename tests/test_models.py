"""Tests for mttlib.models: shapes, the paper's ConvNet, and the flat-parameter forward.

Every check compares against something computed independently: parameter counts by hand,
the module's own forward and autograd, finite differences (gradcheck, float64).
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from torch import nn

from mttlib.models import MODEL_NAMES, FunctionalModel, make_model, parameter_count
from mttlib.layers import InstanceNorm, Linear
from mttlib.zoo import AvgPool2x2

SIZES = (28, 32, 64, 128)
TAKES_WIDTH = {n for n in MODEL_NAMES if n not in ("lenet",)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: thread start-up and contention cost more than they save.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, channels: int, num_classes: int, image_size: int, **kw) -> nn.Module:
    """The named model, made small (width 8) wherever the model accepts a width."""
    if name in TAKES_WIDTH:
        kw.setdefault("width", 8)
    return make_model(name, channels, num_classes, image_size, **kw)


def layers_of(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("image_size", SIZES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_every_parameter_gets_a_gradient(name, image_size, channels):
    torch.manual_seed(0)
    model = tiny(name, channels, 7, image_size)
    x = torch.randn(2, channels, image_size, image_size)
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the forward: {missing}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_width_models_on_cifar_sized_input(name):
    model = make_model(name, 3, 10, 32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_names_are_case_insensitive_and_reference_spellings_work():
    ref = make_model("convnetd4", 3, 10, 32)
    for spelling in ("ConvNetD4", "CONVNETD4", "convnet_d4"):
        other = make_model(spelling, 3, 10, 32)
        assert [tuple(p.shape) for p in other.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert layers_of(make_model("ResNet18BN_AP", 3, 10, 32), nn.BatchNorm2d)
    assert layers_of(make_model("AlexNetBN", 3, 10, 32), nn.BatchNorm2d)
    assert layers_of(make_model("VGG11BN", 3, 10, 32, width=8), nn.BatchNorm2d)
    assert layers_of(make_model("ConvNetAS", 3, 10, 32, width=8), nn.Sigmoid)


def test_other_image_sizes_follow_the_shapes():
    # 16 px: default ConvNet depth leaves a 4x4 map (depth 2).
    model = make_model("convnet", 3, 5, 16, width=8)
    assert len(layers_of(model, nn.Conv2d)) == 2
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert make_model("resnet18", 3, 5, 48, width=8)(torch.randn(1, 3, 48, 48)).shape == (1, 5)


# --------------------------------------------------------------------------- the paper's ConvNet


@pytest.mark.parametrize("image_size,depth", [(28, 3), (32, 3), (64, 4), (128, 5)])
def test_default_convnet_structure(image_size, depth):
    channels = 1 if image_size == 28 else 3
    model = make_model("convnet", channels, 10, image_size)
    convs = layers_of(model, nn.Conv2d)
    norms = layers_of(model, nn.GroupNorm)
    pools = layers_of(model, nn.AvgPool2d)
    assert len(convs) == len(norms) == len(pools) == len(layers_of(model, nn.ReLU)) == depth
    assert not layers_of(model, nn.BatchNorm2d) and not layers_of(model, nn.MaxPool2d)
    for i, conv in enumerate(convs):
        assert conv.out_channels == 128 and conv.kernel_size == (3, 3)
        # MNIST-sized images: padding 3 turns 28 px into 32 px
        assert conv.padding == ((3, 3) if (i == 0 and image_size == 28) else (1, 1))
    for gn in norms:
        assert (gn.num_groups, gn.num_channels, gn.affine) == (128, 128, True)
    for pool in pools:
        assert (pool.kernel_size, pool.stride) == (2, 2)
    # conv -> norm -> activation -> pooling, in that order
    kinds = [type(m) for m in model.features]
    # GroupNorm(C, C) and AvgPool2d(2, 2), with their second derivatives written out (mttlib.layers)
    assert kinds[:4] == [nn.Conv2d, InstanceNorm, nn.ReLU, AvgPool2x2]
    # the feature map always ends at 4x4 with these depths
    linear = layers_of(model, nn.Linear)
    assert len(linear) == 1 and linear[0].in_features == 128 * 4 * 4


@pytest.mark.parametrize("one_kernel", [False, True], ids=["cpu-route", "cuda-route"])
def test_pooling_is_avg_pool2d_with_its_gradients_in_float64(one_kernel, monkeypatch):
    import torch.nn.functional as F
    from torch.autograd import gradcheck, gradgradcheck

    from mttlib import layers

    monkeypatch.setattr(layers, "_one_pool_kernel", lambda x: one_kernel)  # both routes, on any machine
    pool = AvgPool2x2()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(pool(x), F.avg_pool2d(x, 2, 2), rtol=0, atol=1e-15)
    assert gradcheck(pool, (x,)) and gradgradcheck(pool, (x,))  # the student's double backward goes through it
    (ours,) = torch.autograd.grad(pool(x).square().sum(), x, create_graph=True)
    (theirs,) = torch.autograd.grad(F.avg_pool2d(x, 2, 2).square().sum(), x, create_graph=True)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-15)
    for odd in (torch.randn(2, 3, 7, 6, generator=g), torch.randn(2, 3, 8, 8, generator=g).contiguous(
            memory_format=torch.channels_last)):  # avg_pool2d's own path: floor on odd sides, any layout
        assert torch.equal(pool(odd), F.avg_pool2d(odd, 2, 2))


def _second_derivatives(f, inputs, seed=1):
    """Gradients of a loss of ``f(*inputs)``'s gradient: what a meta-gradient differentiates."""
    g = torch.Generator().manual_seed(seed)
    out = f(*inputs)
    first = torch.autograd.grad((out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum(), inputs,
                                create_graph=True)
    loss = sum((d * torch.randn(d.shape, generator=g, dtype=d.dtype)).sum() for d in first)
    second = torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)
    return [out, *first, *second]


def test_instance_norm_is_group_norm_to_the_second_derivative_in_float64():
    import torch.nn.functional as F
    from torch.autograd import gradcheck, gradgradcheck

    g = torch.Generator().manual_seed(0)
    norm = InstanceNorm(3).double()
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w, b = (torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert isinstance(norm, nn.GroupNorm) and [n for n, _ in norm.named_parameters()] == ["weight", "bias"]

    def ours(x, w, b):
        return torch.func.functional_call(norm, {"weight": w, "bias": b}, (x,))

    def theirs(x, w, b):
        return F.group_norm(x, 3, w, b, 1e-5)

    assert gradcheck(ours, (x, w, b)) and gradgradcheck(ours, (x, w, b))
    for a, c in zip(_second_derivatives(ours, (x, w, b)), _second_derivatives(theirs, (x, w, b))):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)
    first = torch.autograd.grad(ours(x, w, b).square().sum(), x, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="second order"):  # a third derivative is refused, not computed wrongly
        torch.autograd.grad(first.square().sum(), x, create_graph=True)


def test_linear_is_nn_linear_to_the_second_derivative_in_float64():
    import torch.nn.functional as F
    from torch.autograd import gradcheck, gradgradcheck

    g = torch.Generator().manual_seed(0)
    layer = Linear(7, 3).double()
    x = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)

    def ours(x, w, b):
        return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))

    assert gradcheck(ours, (x, w, b)) and gradgradcheck(ours, (x, w, b))
    for a, c in zip(_second_derivatives(ours, (x, w, b)), _second_derivatives(F.linear, (x, w, b))):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)


def test_convnet_parameter_count_for_cifar10_by_hand():
    width, classes = 128, 10
    conv1 = 3 * width * 3 * 3 + width
    conv23 = 2 * (width * width * 3 * 3 + width)
    norms = 3 * 2 * width  # GroupNorm affine: a weight and a bias per channel
    linear = width * 4 * 4 * classes + classes  # 32 px halved three times -> 4x4
    expected = conv1 + conv23 + norms + linear
    assert expected == 320_010
    model = make_model("convnet", 3, classes, 32)
    assert parameter_count(model) == expected
    assert FunctionalModel(model).numel == expected


def test_known_parameter_counts_of_the_other_networks():
    # LeNet by hand: two convolutions and three linear layers
    lenet = (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 5 * 5 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert parameter_count(make_model("lenet", 3, 10, 32)) == lenet
    mlp = (3 * 32 * 32 * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)
    assert parameter_count(make_model("mlp", 3, 10, 32)) == mlp
    # the commonly quoted sizes of the CIFAR-10 versions
    assert parameter_count(make_model("resnet18_bn", 3, 10, 32)) == 11_173_962
    assert parameter_count(make_model("resnet18", 3, 10, 32)) == 11_173_962
    assert parameter_count(make_model("vgg11_bn", 3, 10, 32)) == 9_231_114
    # the _AP variant classifies the flattened 4x4 map instead of a pooled vector
    assert parameter_count(make_model("resnet18_bn_ap", 3, 10, 32)) == 11_173_962 - 5_130 + 512 * 16 * 10 + 10


def test_convnet_aliases_set_the_right_option():
    def convnet(name):
        return make_model(name, 3, 10, 32, width=8) if not name.startswith("convnetw") else make_model(name, 3, 10, 32)

    assert len(layers_of(convnet("convnetd2"), nn.Conv2d)) == 2
    assert len(layers_of(convnet("convnetd5"), nn.Conv2d)) == 5
    for w in (32, 64, 128, 256):
        assert {c.out_channels for c in layers_of(convnet(f"convnetw{w}"), nn.Conv2d)} == {w}
    assert len(layers_of(convnet("convnet_bn"), nn.BatchNorm2d)) == 3
    assert {g.num_groups for g in layers_of(convnet("convnet_ln"), nn.GroupNorm)} == {1}
    assert {g.num_groups for g in layers_of(convnet("convnet_gn"), nn.GroupNorm)} == {4}
    assert {g.num_groups for g in layers_of(convnet("convnet_in"), nn.GroupNorm)} == {8}
    assert not layers_of(convnet("convnet_nn"), nn.GroupNorm)
    assert len(layers_of(convnet("convnet_mp"), nn.MaxPool2d)) == 3
    assert len(layers_of(convnet("convnet_ap"), nn.AvgPool2d)) == 3
    no_pool = convnet("convnet_np")
    assert not layers_of(no_pool, nn.AvgPool2d) and not layers_of(no_pool, nn.MaxPool2d)
    assert no_pool.classifier.in_features == 8 * 32 * 32  # the map stays full size
    assert len(layers_of(convnet("convnet_sigmoid"), nn.Sigmoid)) == 3
    assert len(layers_of(convnet("convnet_leakyrelu"), nn.LeakyReLU)) == 3
    assert len(layers_of(convnet("convnet_relu"), nn.ReLU)) == 3
    # an explicit override wins over what the name implies
    assert len(layers_of(make_model("convnet_bn", 3, 10, 32, width=8, norm="none"), nn.BatchNorm2d)) == 0


def test_norm_variants_of_the_other_networks():
    def norms(name, kind):
        return layers_of(make_model(name, 3, 10, 32, width=8), kind)

    assert not norms("alexnet", nn.BatchNorm2d) and not norms("alexnet", nn.GroupNorm)
    assert len(norms("alexnet_bn", nn.BatchNorm2d)) == 5
    assert all(g.num_groups == g.num_channels for g in norms("vgg11", nn.GroupNorm))
    assert len(norms("vgg11", nn.GroupNorm)) == 8 and not norms("vgg11", nn.BatchNorm2d)
    assert len(norms("vgg11_bn", nn.BatchNorm2d)) == 8 and not norms("vgg11_bn", nn.GroupNorm)
    assert all(g.num_groups == g.num_channels for g in norms("resnet18", nn.GroupNorm))
    assert not norms("resnet18", nn.BatchNorm2d) and not norms("resnet18_bn", nn.GroupNorm)
    ap = make_model("resnet18_bn_ap", 3, 10, 32, width=8)
    assert all(c.stride == (1, 1) for c in layers_of(ap, nn.Conv2d))  # downsampling by pooling
    assert len(layers_of(ap, nn.AvgPool2d)) == 6  # three stages: main path and shortcut
    plain = make_model("resnet18_bn", 3, 10, 32, width=8)
    assert sum(c.stride == (2, 2) for c in layers_of(plain, nn.Conv2d)) == 6


# Expert trajectories store flat parameter vectors, so each model's parameter order and shapes are
# part of the file format. Fingerprints of ``name:shape;...`` at 3 x 32 px and 10 classes.
LAYOUTS = {
    "convnet": "706b3894d026", "convnetd1": "be98db72c8a9", "convnetd2": "040ecf9932c9", "convnetd3": "706b3894d026",
    "convnetd4": "47ec3e1d8b76", "convnetd5": "958114d6827f", "convnetw32": "5528df36dca2",
    "convnetw64": "41bc25f288f4", "convnetw128": "706b3894d026", "convnetw256": "5481f91bbda5",
    "convnet_bn": "706b3894d026", "convnet_ln": "706b3894d026", "convnet_in": "706b3894d026",
    "convnet_gn": "706b3894d026", "convnet_nn": "8eafe4dd9cf9", "convnet_mp": "706b3894d026",
    "convnet_ap": "706b3894d026", "convnet_np": "a955395eea37", "convnet_sigmoid": "706b3894d026",
    "convnet_relu": "706b3894d026", "convnet_leakyrelu": "706b3894d026", "alexnet": "5435a3a1d187",
    "alexnet_bn": "4b6c3f6ba977", "vgg11": "eb4941c050cb", "vgg11_bn": "eb4941c050cb", "resnet18": "423ce3dbc722",
    "resnet18_bn": "423ce3dbc722", "resnet18_bn_ap": "7741327f28dc", "lenet": "2f7506f13109", "mlp": "dadaca6dca34",
}


def test_every_name_keeps_its_parameter_layout():
    assert set(MODEL_NAMES) == set(LAYOUTS), "a model name was added or removed: update LAYOUTS deliberately"
    for name in MODEL_NAMES:
        layout = ";".join(f"{n}:{tuple(p.shape)}" for n, p in make_model(name, 3, 10, 32).named_parameters())
        assert hashlib.sha256(layout.encode()).hexdigest()[:12] == LAYOUTS[name], (
            f"{name}: parameter order or shapes changed, so saved expert trajectories no longer load")


def test_construction_uses_but_never_reseeds_the_global_generator():
    torch.manual_seed(123)
    first = FunctionalModel(make_model("convnet", 3, 10, 32, width=8)).flatten()
    second = FunctionalModel(make_model("convnet", 3, 10, 32, width=8)).flatten()
    torch.manual_seed(123)
    again = FunctionalModel(make_model("convnet", 3, 10, 32, width=8)).flatten()
    assert not torch.equal(first, second)
    assert torch.equal(first, again)


# --------------------------------------------------------------------------- FunctionalModel

FUNCTIONAL_CASES = [
    ("convnet", 3, 32, {"width": 8}),
    ("convnet_bn", 3, 32, {"width": 8}),
    ("convnet_ln", 1, 28, {"width": 8}),
    ("alexnet_bn", 3, 32, {"width": 8}),
    ("vgg11", 3, 32, {"width": 4}),
    ("resnet18_bn", 3, 32, {"width": 4}),
    ("resnet18_bn_ap", 1, 28, {"width": 4}),
    ("lenet", 1, 28, {}),
    ("mlp", 3, 32, {"width": 16}),
]


@pytest.mark.parametrize("name,channels,size,kw", FUNCTIONAL_CASES)
def test_functional_forward_equals_module_forward(name, channels, size, kw):
    torch.manual_seed(1)
    model = make_model(name, channels, 10, size, **kw)
    twin = copy.deepcopy(model)
    fm = FunctionalModel(twin)
    flat = fm.flatten()
    x = torch.randn(4, channels, size, size)
    for train in (True, False):
        model.train(train)
        twin.train(train)
        expected = model(x)
        got = fm(flat, x)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # buffers stay the module's: the training-mode forward updated the twin's running stats
    for (n, b), (_, b2) in zip(model.named_buffers(), twin.named_buffers()):
        torch.testing.assert_close(b2, b, rtol=0, atol=0, msg=f"buffer {n}")


@pytest.mark.parametrize("name,channels,size,kw", FUNCTIONAL_CASES)
def test_load_then_forward_matches(name, channels, size, kw):
    torch.manual_seed(2)
    model = make_model(name, channels, 10, size, **kw).eval()
    fm = FunctionalModel(model)
    new = torch.randn(fm.numel) * 0.05
    fm.load_(new)
    torch.testing.assert_close(fm.flatten(), new, rtol=0, atol=0)
    x = torch.randn(3, channels, size, size)
    torch.testing.assert_close(fm(new, x), model(x), rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())


def test_flatten_is_a_detached_copy_in_parameter_order():
    model = make_model("convnet", 3, 10, 8, width=4, depth=2)
    fm = FunctionalModel(model)
    flat = fm.flatten()
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert flat.dim() == 1 and not flat.requires_grad
    torch.testing.assert_close(flat, expected, rtol=0, atol=0)
    flat.add_(1.0)
    torch.testing.assert_close(fm.flatten(), expected, rtol=0, atol=0)
    assert fm.names == tuple(n for n, _ in model.named_parameters())


def test_unflatten_returns_views_of_the_flat_vector():
    fm = FunctionalModel(make_model("convnet", 3, 10, 8, width=4, depth=2))
    flat = torch.randn(fm.numel)
    params = fm.unflatten(flat)
    base = flat.untyped_storage().data_ptr()
    offset = 0
    for (name, tensor), numel, shape in zip(params.items(), fm.numels, fm.shapes):
        assert tensor.shape == shape
        assert tensor.untyped_storage().data_ptr() == base, f"{name} was copied"
        assert tensor.storage_offset() == offset
        offset += numel


def test_load_converts_dtype():
    model = make_model("mlp", 1, 3, 4, width=5)
    fm = FunctionalModel(model)
    new = torch.randn(fm.numel, dtype=torch.float64)
    fm.load_(new)
    assert fm.flatten().dtype == torch.float32
    torch.testing.assert_close(fm.flatten(), new.float(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["convnet", "convnet_bn", "resnet18_bn"])
def test_gradients_match_module_autograd(name):
    torch.manual_seed(3)
    model = make_model(name, 3, 5, 16, width=4)
    fm = FunctionalModel(model)
    x = torch.randn(6, 3, 16, 16)
    y = torch.randint(0, 5, (6,))

    x1 = x.clone().requires_grad_()
    nn.functional.cross_entropy(model(x1), y).backward()
    expected_flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    flat = fm.flatten().requires_grad_()
    x2 = x.clone().requires_grad_()
    loss = nn.functional.cross_entropy(fm(flat, x2), y)
    g_flat, g_x = torch.autograd.grad(loss, (flat, x2))
    torch.testing.assert_close(g_flat, expected_flat, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_x, x1.grad, rtol=1e-6, atol=1e-7)


def test_gradcheck_float64_in_flat_parameters_and_input():
    torch.manual_seed(4)
    model = make_model("convnet", 3, 3, 8, width=4, depth=2).double()
    fm = FunctionalModel(model)
    flat = (fm.flatten() + 0.01 * torch.randn(fm.numel, dtype=torch.float64)).requires_grad_()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fm, (flat, x), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_float64_batchnorm_in_training_mode():
    torch.manual_seed(5)
    model = make_model("convnet_bn", 1, 2, 8, width=4, depth=1).double()
    fm = FunctionalModel(model)
    flat = fm.flatten().requires_grad_()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: fm(f, x), (flat,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradgradcheck_float64_for_hessian_vector_products():
    # trajectory matching differentiates through student SGD steps: second order must hold
    torch.manual_seed(6)
    model = make_model("convnet", 2, 2, 4, width=2, depth=1, activation="sigmoid").double()
    fm = FunctionalModel(model)
    flat = fm.flatten().requires_grad_()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda f: fm(f, x), (flat,), eps=1e-6, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Valid names") as info:
        make_model("convnett", 3, 10, 32)
    message = str(info.value)
    assert "'convnet'" in message and "resnet18_bn_ap" in message and "mlp" in message


@pytest.mark.parametrize(
    "name,size,kw,fragment",
    [
        ("convnetd5", 16, {}, "depth=4"),
        ("convnet", 16, {"depth": 5}, "depth=4"),
        ("convnet", 0, {}, "positive integer"),
        ("convnet", -32, {}, "positive integer"),
        ("convnet", 32.0, {}, "positive integer"),
        ("vgg11", 16, {}, "32 px"),
        ("lenet", 8, {}, "16 px"),
        ("alexnet", 4, {}, "8 px"),
        ("resnet18_bn_ap", 4, {}, "8 px"),
    ],
)
def test_bad_image_size_says_what_works(name, size, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_model(name, 3, 10, size, **kw)


def test_depth_error_suggests_depth_and_no_pooling_allows_it():
    with pytest.raises(ValueError, match="pooling='none'"):
        make_model("convnetd5", 3, 10, 16)
    assert make_model("convnetd5", 3, 10, 16, width=4, pooling="none")(torch.randn(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize(
    "name,kw,fragment",
    [
        ("lenet", {"width": 8}, "accepts no overrides"),
        ("vgg11", {"depth": 3}, "accepts only width, norm"),
        ("convnet", {"norm": "weirdnorm"}, "choose one of instancenorm"),
        ("convnet", {"activation": "gelu"}, "choose one of relu"),
        ("convnet", {"pooling": "avg"}, "choose one of avgpooling"),
        ("convnet", {"width": 0}, "width must be a positive integer"),
        ("convnet_gn", {"width": 6}, "multiple of 4"),
    ],
)
def test_bad_overrides_raise(name, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_model(name, 3, 10, 32, **kw)


def test_bad_channels_or_classes_raise():
    with pytest.raises(ValueError, match="channels"):
        make_model("convnet", 0, 10, 32)
    with pytest.raises(ValueError, match="num_classes"):
        make_model("convnet", 3, 0, 32)


def test_wrong_flat_size_names_both_sizes_and_the_likely_cause():
    fm = FunctionalModel(make_model("convnet", 3, 10, 32, width=8))
    other = FunctionalModel(make_model("convnet", 3, 100, 32, width=8))
    wrong = other.flatten()
    with pytest.raises(ValueError) as info:
        fm.load_(wrong)
    message = str(info.value)
    assert f"{fm.numel:,}" in message and f"{other.numel:,}" in message
    assert "trajectory" in message and "different model" in message
    with pytest.raises(ValueError, match=f"{fm.numel:,}"):
        fm(wrong, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        fm.unflatten(fm.flatten().reshape(1, -1))


def test_instance_norm_takes_cotangents_of_any_layout():
    # a loss like y.sum() hands the second derivative an expanded (stride 0) cotangent
    norm = InstanceNorm(3).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    first = torch.autograd.grad(norm(x).square().sum(), x, create_graph=True)[0]
    (ours,) = torch.autograd.grad(first.sum(), x)
    ref = torch.nn.GroupNorm(3, 3).double()
    first_ref = torch.autograd.grad(ref(x).square().sum(), x, create_graph=True)[0]
    (theirs,) = torch.autograd.grad(first_ref.sum(), x)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)

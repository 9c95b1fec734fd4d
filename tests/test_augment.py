"""DSA: gradients, exact replay, and each operation against an independent computation."""

import math
from collections import Counter

import pytest
import torch

from mttlib.augment import DIGIT_STRATEGY, DSA, DSA_STRATEGY, OPS, DSAParams
from mttlib.data import dsa_strategy_for
from mttlib.io import atomic_save, safe_load


def _images(n=2, c=3, h=8, w=8, dtype=torch.float64, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _shifted(image, dy, dx):
    """Reference translation of one [C, H, W] image: roll, then zero what wrapped around."""
    out = torch.roll(image, shifts=(dy, dx), dims=(-2, -1))
    if dy > 0:
        out[:, :dy] = 0
    elif dy < 0:
        out[:, dy:] = 0
    if dx > 0:
        out[:, :, :dx] = 0
    elif dx < 0:
        out[:, :, dx:] = 0
    return out


# --- gradients and replay -----------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("channels", [1, 3])
def test_gradcheck_every_op(op, channels):
    dsa = DSA(op)
    x = _images(c=channels).requires_grad_()
    params = dsa.sample(2, (8, 8), _gen(3))
    assert params.op == op
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,))


def test_gradcheck_non_square_scale_and_rotate():
    x = _images(h=6, w=9).requires_grad_()
    for op in ("scale", "rotate", "crop", "cutout"):
        dsa = DSA(op)
        params = dsa.sample(2, (6, 9), _gen(1))
        assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,))


def test_same_seed_same_params_and_output_and_replay_is_exact():
    dsa, x = DSA(), _images(n=5, h=16, w=16, dtype=torch.float32)
    for seed in range(12):
        a = dsa.sample(5, (16, 16), _gen(seed))
        b = dsa.sample(5, (16, 16), _gen(seed))
        assert a.op == b.op and a.tensors().keys() == b.tensors().keys()
        assert all(torch.equal(a.tensors()[k], b.tensors()[k]) for k in a.tensors())
        assert torch.equal(dsa.apply(x, a), dsa.apply(x, a))  # replay
        assert torch.equal(dsa.apply(x, a), dsa(x, _gen(seed)))  # __call__ = apply(sample)


def test_different_seeds_differ():
    dsa, x = DSA(), _images(n=8, h=16, w=16)
    outputs = [dsa(x, _gen(seed)) for seed in range(6)]
    for i in range(len(outputs)):
        for j in range(i):
            assert not torch.allclose(outputs[i], outputs[j])


def test_global_rng_is_used_without_a_generator():
    dsa = DSA("rotate")
    torch.manual_seed(7)
    a = dsa.sample(4, 32)
    torch.manual_seed(7)
    b = dsa.sample(4, 32)
    c = dsa.sample(4, 32)
    assert torch.equal(a.angle, b.angle) and not torch.equal(b.angle, c.angle)


def test_params_round_trip_through_a_safe_file(tmp_path):
    dsa, x = DSA("cutout"), _images(n=3, h=16, w=16)
    params = dsa.sample(3, 16, _gen(0))
    atomic_save({"op": params.op, **params.tensors()}, tmp_path / "p.pt")  # a string and tensors only
    again = DSAParams(**safe_load(tmp_path / "p.pt"))
    assert torch.equal(dsa.apply(x, again), dsa.apply(x, params))


# --- each operation against an independent computation ------------------------------------------

def _close(a, b):  # flip and crop resample at whole pixels: exact up to the rounding of the grid
    return torch.allclose(a, b, rtol=0, atol=1e-12 if a.dtype == torch.float64 else 1e-5)


def test_flip_mirrors_the_chosen_samples():
    x = _images(n=4)
    flip = torch.tensor([True, False, False, True])
    out = DSA("flip").apply(x, DSAParams("flip", flip=flip))
    for i in range(4):
        expected = x[i, :, :, torch.arange(7, -1, -1)] if flip[i] else x[i]
        assert _close(out[i], expected)


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_crop_is_a_zero_filled_shift(size):
    x = _images(n=4, h=size[0], w=size[1])
    shift = torch.tensor([[2, -3], [0, 0], [-1, 4], [5, 1]])
    out = DSA("crop").apply(x, DSAParams("crop", shift=shift))
    for i, (dy, dx) in enumerate(shift.tolist()):
        assert _close(out[i], _shifted(x[i], dy, dx))
        if dy == dx == 0:
            assert _close(out[i], x[i])
    # the source pixel moves down by dy, right by dx
    assert _close(out[0, :, 2 + 2, 5 - 3], x[0, :, 2, 5])


def test_cutout_zeroes_one_square_of_the_expected_side():
    x = _images(n=2, h=32, w=32) + 1.0  # no zero pixels to begin with
    centre = torch.tensor([[15, 10], [20, 20]])
    out = DSA("cutout").apply(x, DSAParams("cutout", centre=centre))
    for i, (row, col) in enumerate(centre.tolist()):
        square = torch.zeros(32, 32, dtype=torch.bool)
        square[row - 8:row + 8, col - 8:col + 8] = True  # side int(32 * 0.5 + 0.5) = 16
        assert square.sum() == 256
        assert (out[i][:, square] == 0).all()
        assert torch.equal(out[i][:, ~square], x[i][:, ~square])


def test_cutout_at_the_border_is_clipped_to_the_image():
    x = torch.ones(1, 1, 32, 32)
    out = DSA("cutout").apply(x, DSAParams("cutout", centre=torch.tensor([[32, 0]])))
    zeros = out[0, 0] == 0
    assert zeros.sum() == 8 * 8 and zeros[24:, :8].all()


def _color_reference(x, rb, rs, rc, brightness=1.0, saturation=2.0, contrast=0.5):
    """The three colour operations written out sample by sample."""
    out = []
    for i in range(x.shape[0]):
        img = x[i] + (rb[i] - 0.5) * brightness
        grey = img.mean(0, keepdim=True)
        img = grey + (img - grey) * (rs[i] * saturation)
        img = img.mean() + (img - img.mean()) * (rc[i] + contrast)
        out.append(img)
    return torch.stack(out)


def test_color_matches_the_closed_form_with_the_sampled_r():
    dsa, x = DSA("color"), _images(n=5)
    params = dsa.sample(5, 8, _gen(4))
    rb, rs, rc = (params.brightness.double(), params.saturation.double(), params.contrast.double())
    assert torch.allclose(dsa.apply(x, params), _color_reference(x, rb, rs, rc), atol=1e-12)


def test_each_color_step_alone():
    dsa, x = DSA("color"), _images(n=3)
    r = torch.tensor([0.1, 0.5, 0.9])
    half = torch.full((3,), 0.5)  # r = 0.5 makes saturation (x2.0) and contrast (+0.5) neutral
    view = r.double().view(3, 1, 1, 1)
    brightness = dsa.apply(x, DSAParams("color", brightness=r, saturation=half, contrast=half))
    assert torch.allclose(brightness, x + (view - 0.5), atol=1e-12)
    saturation = dsa.apply(x, DSAParams("color", brightness=half, saturation=r, contrast=half))
    grey = (x[:, 0:1] + x[:, 1:2] + x[:, 2:3]) / 3
    assert torch.allclose(saturation, grey + (x - grey) * 2 * view, atol=1e-12)
    contrast = dsa.apply(x, DSAParams("color", brightness=half, saturation=half, contrast=r))
    mean = x.sum(dim=(1, 2, 3), keepdim=True) / x[0].numel()
    assert torch.allclose(contrast, mean + (x - mean) * (view + 0.5), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_scale_and_zero_rotation_return_x(dtype):
    x = _images(n=2, h=9, w=7, dtype=dtype)
    dsa = DSA()
    scaled = dsa.apply(x, DSAParams("scale", scale=torch.ones(2, 2)))
    rotated = dsa.apply(x, DSAParams("rotate", angle=torch.zeros(2)))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert scaled.dtype == dtype and torch.allclose(scaled, x, atol=tol)
    assert torch.allclose(rotated, x, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotate_quarter_turn_matches_rot90(dtype):
    x = _images(n=2, h=9, w=9, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    angle = torch.tensor([math.pi / 2, -math.pi / 2], dtype=torch.float64)
    out = DSA().apply(x, DSAParams("rotate", angle=angle))
    assert torch.allclose(out[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=tol)
    assert torch.allclose(out[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=tol)
    # a positive angle turns the picture anticlockwise: the top-middle pixel goes to left-middle
    dot = torch.zeros(1, 1, 9, 9, dtype=dtype)
    dot[0, 0, 0, 4] = 1
    turned = DSA().apply(dot, DSAParams("rotate", angle=angle[:1]))
    assert turned[0, 0, 4, 0] == pytest.approx(1, abs=tol)
    assert turned.sum() == pytest.approx(1, abs=tol)


def test_scale_stretches_the_sampling_grid():
    # sx = 2 samples twice as far from the centre horizontally: out[:, j] = x[:, 2j - c] around c
    x = torch.arange(9, dtype=torch.float64).repeat(9, 1).view(1, 1, 9, 9)
    out = DSA().apply(x, DSAParams("scale", scale=torch.tensor([[0.5, 1.0]])))
    expected = 4 + (torch.arange(9, dtype=torch.float64) - 4) * 0.5
    assert torch.allclose(out[0, 0], expected.repeat(9, 1), atol=1e-12)


# --- the random choices ---------------------------------------------------------------------------

def test_one_group_per_call_roughly_uniform():
    dsa, g = DSA(), _gen(0)
    counts = Counter()
    for _ in range(600):
        params = dsa.sample(2, 32, g)
        counts[params.op] += 1
        expected = {"color": {"brightness", "saturation", "contrast"}, "crop": {"shift"},
                    "cutout": {"centre"}, "flip": {"flip"}, "scale": {"scale"}, "rotate": {"angle"}}
        assert set(params.tensors()) == expected[params.op]
    assert set(counts) == set(OPS)
    assert all(60 <= c <= 140 for c in counts.values()), counts  # 100 expected, sd about 9


def test_digit_strategy_never_flips():
    assert "flip" not in DIGIT_STRATEGY.split("_") and "flip" in DSA_STRATEGY.split("_")
    digits, g = DSA(dsa_strategy_for(True)), _gen(0)
    assert digits.ops == tuple(DIGIT_STRATEGY.split("_"))
    assert "flip" in DSA(dsa_strategy_for(False)).ops
    assert all(digits.sample(1, 28, g).op != "flip" for _ in range(300))


def test_parameter_ranges_at_32_pixels():
    n, g = 4000, _gen(1)
    scale = DSA("scale").sample(n, 32, g).scale
    assert scale.shape == (n, 2) and scale.min() >= 1 / 1.2 - 1e-6 and scale.max() <= 1.2 + 1e-6
    assert scale.min() < 0.85 and scale.max() > 1.18
    assert not torch.equal(scale[:, 0], scale[:, 1])  # sx and sy drawn independently
    angle = torch.rad2deg(DSA("rotate").sample(n, 32, g).angle)
    assert angle.abs().max() <= 15 + 1e-4 and angle.min() < -14 and angle.max() > 14
    shift = DSA("crop").sample(n, 32, g).shift
    assert shift.dtype == torch.int64 and set(shift.flatten().tolist()) == set(range(-4, 5))
    centre = DSA("cutout").sample(n, 32, g).centre
    for axis in range(2):  # side 16 is even: the centre can sit one past the last pixel
        assert set(centre[:, axis].tolist()) == set(range(0, 33))
    flip = DSA("flip").sample(n, 32, g).flip
    assert 0.45 < flip.double().mean() < 0.55
    # the square has side 16: a fully inside one zeroes 256 pixels
    inside = torch.tensor([[16, 16]])
    out = DSA("cutout").apply(torch.ones(1, 3, 32, 32), DSAParams("cutout", centre=inside))
    assert (out[0, 0] == 0).sum() == 256


def test_ranges_round_to_nearest_pixel_per_axis():
    n, g = 2000, _gen(2)
    shift = DSA("crop").sample(n, (28, 20), g).shift  # 3.5 -> 4 rows, 2.5 -> 3 columns
    assert set(shift[:, 0].tolist()) == set(range(-4, 5))
    assert set(shift[:, 1].tolist()) == set(range(-3, 4))
    centre = DSA("cutout").sample(n, (28, 21), g).centre  # sides 14 (even) and 11 (odd)
    assert set(centre[:, 0].tolist()) == set(range(0, 29))
    assert set(centre[:, 1].tolist()) == set(range(0, 21))
    out = DSA("cutout").apply(torch.ones(1, 1, 28, 21), DSAParams("cutout", centre=torch.tensor([[10, 10]])))
    assert (out == 0).sum() == 14 * 11


def test_params_are_drawn_on_the_cpu_and_keep_the_image_dtype():
    dsa = DSA()
    for seed in range(10):
        params = dsa.sample(3, 8, _gen(seed))
        assert all(t.device.type == "cpu" for t in params.tensors().values())
        for dtype in (torch.float32, torch.float64):
            assert dsa.apply(_images(n=3, dtype=dtype), params).dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    dsa, x = DSA(), _images(n=4, h=16, w=16, dtype=torch.float64)
    for seed in range(12):
        params = dsa.sample(4, 16, _gen(seed))
        assert torch.allclose(dsa.apply(x.cuda(), params).cpu(), dsa.apply(x, params), atol=1e-10)


# --- errors a user can make -----------------------------------------------------------------------

def test_unknown_op_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid operations are color, crop, cutout, flip"):
        DSA("color_blur")


def test_wrong_batch_size_or_rank_is_explained():
    dsa = DSA("flip")
    params = dsa.sample(3, 8, _gen(0))
    with pytest.raises(ValueError, match="3 samples but the batch has 2"):
        dsa.apply(_images(n=2), params)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        dsa.apply(torch.zeros(3, 8, 8), params)
    with pytest.raises(ValueError, match="float images"):
        dsa.apply(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), params)


def test_none_strategy_is_the_identity():
    x = _images()
    for strategy in ("none", ""):
        assert torch.equal(DSA(strategy)(x, _gen(0)), x)

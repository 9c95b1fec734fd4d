"""Texture mode: toroidal crops, the batch source, initialisation, seams, export, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mttlib import texture, viz
from mttlib.augment import DSA
from mttlib.texture import (TextureBatchSource, check_texture_data, crop_transform, export_pngs, init_canvases,
                            random_offsets, seam_ratio, tile, toroidal_crop)

IMAGE = 8  # side of the tiny dataset's images


def tiny_data(zca: bool = False, channels: int = 3, per_class: int = 6, classes: int = 3):
    """A small ImageData whose every training image is unique and recognisable by its pixels."""
    from mttlib.data import ZCA, ImageData

    g = torch.Generator().manual_seed(0)
    n = per_class * classes
    train = torch.randint(0, 256, (n, channels, IMAGE, IMAGE), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat(per_class)  # interleaved, so class order is not index order
    test = torch.randint(0, 256, (classes * 2, channels, IMAGE, IMAGE), generator=g, dtype=torch.uint8)
    data = ImageData(name="tiny", train_images=train, train_labels=labels, test_images=test,
                     test_labels=torch.arange(classes).repeat(2), classes=[f"class {c}" for c in range(classes)],
                     mean=(0.5,) * channels, std=(0.25,) * channels, zca=None, digits=False)
    if zca:
        data.zca = ZCA.fit(data.preprocess(train), eps=0.1)
    return data


# --- crops ---------------------------------------------------------------------------------------


def test_crop_at_the_corner_wraps_around():
    canvas = torch.randn(1, 3, 10, 12)
    h, w, size = 10, 12, (5, 6)
    out = toroidal_crop(canvas, torch.tensor([[h - 2, w - 3]]), size)
    rows = torch.cat([canvas[:, :, h - 2:, :], canvas[:, :, :3, :]], 2)  # 2 bottom rows, then 3 top rows
    manual = torch.cat([rows[:, :, :, w - 3:], rows[:, :, :, :3]], 3)  # 3 right cols, then 3 left cols
    assert out.shape == (1, 3, 5, 6)
    assert torch.equal(out, manual)


def test_crops_equal_rolled_canvases():
    g = torch.Generator().manual_seed(1)
    canvases = torch.randn(5, 2, 9, 7, generator=g)
    offsets = random_offsets(5, (9, 7), g)
    out = toroidal_crop(canvases, offsets, (4, 6))
    for i, (r, c) in enumerate(offsets.tolist()):
        expected = torch.roll(canvases[i], shifts=(-r, -c), dims=(1, 2))[:, :4, :6]
        assert torch.equal(out[i], expected)


def test_crop_with_an_index_picks_the_right_canvas():
    canvases = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()
    out = toroidal_crop(canvases, torch.zeros(4, 2, dtype=torch.long), 2, index=torch.tensor([2, 0, 2, 1]))
    assert out[:, 0, 0, 0].tolist() == [2.0, 0.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="offsets"):
        toroidal_crop(canvases, torch.zeros(2, 2, dtype=torch.long), 2)


def test_offsets_are_uniform_over_every_position():
    g = torch.Generator().manual_seed(2)
    h, w, n = 4, 5, 40_000
    offsets = random_offsets(n, (h, w), g)
    assert offsets.dtype == torch.int64 and offsets.shape == (n, 2)
    assert offsets[:, 0].min() == 0 and offsets[:, 0].max() == h - 1
    assert offsets[:, 1].min() == 0 and offsets[:, 1].max() == w - 1
    counts = torch.bincount(offsets[:, 0] * w + offsets[:, 1], minlength=h * w).double()
    expected = n / (h * w)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50.0  # 19 degrees of freedom: p < 1e-4 above 47


def test_crop_gradient_lands_on_the_pixels_it_read():
    canvas = torch.randn(1, 2, 5, 6, requires_grad=True)
    offsets = torch.tensor([[3, 4]])
    out = toroidal_crop(canvas, offsets, (4, 4))
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    expected = torch.zeros(1, 2, 5, 6)
    for i in range(4):
        for j in range(4):  # crop pixel (i, j) came from canvas pixel ((3 + i) % 5, (4 + j) % 6)
            expected[0, :, (3 + i) % 5, (4 + j) % 6] += weights[0, :, i, j]
    torch.testing.assert_close(canvas.grad, expected)


def test_crop_larger_than_canvas_accumulates_gradient():
    canvas = torch.zeros(1, 1, 3, 3, requires_grad=True)
    toroidal_crop(canvas, torch.tensor([[1, 2]]), (6, 6)).sum().backward()
    assert torch.equal(canvas.grad, torch.full((1, 1, 3, 3), 4.0))  # every pixel read 2 x 2 times


def test_crop_gradcheck_float64():
    canvases = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([[3, 4], [1, 0], [2, 2]])
    index = torch.tensor([0, 1, 0])
    assert torch.autograd.gradcheck(lambda c: toroidal_crop(c, offsets, (3, 3), index=index), (canvases,))


# --- batch source --------------------------------------------------------------------------------


def test_batch_source_shapes_and_labels():
    source = TextureBatchSource(num_canvases=4, canvas_hw=16, image_size=8, canvas_samples=3)
    canvases, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 0, 1, 2])
    plans = source.plans(5, torch.Generator().manual_seed(0))
    assert len(plans) == 5
    for plan in plans:
        assert plan["index"].tolist() == [0, 1, 2, 3]
        assert plan["offsets"].shape == (4, 3, 2) and plan["offsets"].device.type == "cpu"
        x, y = source.batch(canvases, labels, plan)
        assert x.shape == (12, 3, 8, 8)
        assert y.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
        # without augmentation, crop 3 * i + j is the j-th crop of canvas i
        r, c = plan["offsets"][2, 1].tolist()
        assert torch.equal(x[7], torch.roll(canvases[2], (-r, -c), (1, 2))[:, :8, :8])


def test_batch_source_chunks_walk_through_permutations():
    source = TextureBatchSource(num_canvases=5, canvas_hw=8, image_size=4, canvas_samples=2, batch_canvases=2)
    plans = source.plans(6, torch.Generator().manual_seed(3))
    sizes = [len(p["index"]) for p in plans]
    assert sizes == [2, 2, 1, 2, 2, 1]  # one permutation of 5 in chunks of 2, then a fresh one
    assert sorted(torch.cat([p["index"] for p in plans[:3]]).tolist()) == [0, 1, 2, 3, 4]
    assert sorted(torch.cat([p["index"] for p in plans[3:]]).tolist()) == [0, 1, 2, 3, 4]
    x, y = source.batch(torch.randn(5, 1, 8, 8), torch.arange(5), plans[0])
    assert x.shape == (4, 1, 4, 4) and y.tolist() == plans[0]["index"].repeat_interleave(2).tolist()


def test_replaying_a_plan_is_exact():
    dsa = DSA()
    source = TextureBatchSource(num_canvases=6, canvas_hw=16, image_size=8, canvas_samples=2, batch_canvases=4,
                                dsa=dsa)
    canvases = torch.randn(6, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(6)
    plans = source.plans(12, torch.Generator().manual_seed(5))
    again = source.plans(12, torch.Generator().manual_seed(5))
    assert len({p["dsa"].op for p in plans}) > 1  # several DSA operations were exercised
    for plan, twin in zip(plans, again):
        x1, y1 = source.batch(canvases, labels, plan)
        x2, y2 = source.batch(canvases, labels, twin)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        g1, = torch.autograd.grad(x1.square().sum(), canvases)
        g2, = torch.autograd.grad(source.batch(canvases, labels, plan)[0].square().sum(), canvases)
        assert torch.equal(g1, g2)
    # the batch is the crops first, then DSA with the plan's parameters
    plan = plans[0]
    index = plan["index"].repeat_interleave(2)
    crops = toroidal_crop(canvases, plan["offsets"].reshape(-1, 2), 8, index=index)
    assert torch.equal(source.batch(canvases, labels, plan)[0], dsa.apply(crops, plan["dsa"]))


def test_batch_source_rejects_canvases_of_another_size():
    source = TextureBatchSource(num_canvases=2, canvas_hw=16, image_size=8)
    with pytest.raises(ValueError, match="made for 2 canvases"):
        source.batch(torch.randn(2, 3, 8, 8), torch.arange(2), source.plans(1)[0])


# --- tiling and seams ----------------------------------------------------------------------------


def smooth_periodic(h: int = 32, w: int = 32) -> torch.Tensor:
    y = torch.arange(h, dtype=torch.float64).view(-1, 1) / h
    x = torch.arange(w, dtype=torch.float64).view(1, -1) / w
    channels = [torch.sin(2 * math.pi * (2 * x + 0.3)) + torch.cos(2 * math.pi * (y + 0.1)),
                torch.sin(2 * math.pi * (x + y + 0.2)),
                torch.cos(2 * math.pi * (3 * y + 0.05)) * torch.sin(2 * math.pi * (x + 0.4))]
    return torch.stack(channels).float()


def test_tile_repeats_the_canvas():
    canvas = torch.randn(3, 4, 5)
    tiled = tile(canvas, 2, 3)
    assert tiled.shape == (3, 8, 15)
    row = torch.cat([canvas, canvas, canvas], 2)
    assert torch.equal(tiled, torch.cat([row, row], 1))
    batch = tile(torch.randn(2, 1, 4, 4), 3, 1)
    assert batch.shape == (2, 1, 12, 4) and torch.equal(batch[:, :, 8:], batch[:, :, :4])


def test_seam_ratio_of_a_smooth_periodic_texture_is_about_one():
    assert 0.4 < seam_ratio(smooth_periodic()) < 1.7


def test_seam_ratio_of_a_border_step_is_large():
    canvas = smooth_periodic()
    ramp = torch.arange(32.0) / 32 * 3.0  # rises gently inside, drops by 3 across the left/right border
    stepped = canvas + ramp
    assert seam_ratio(stepped) > 5 * seam_ratio(canvas)
    assert seam_ratio(stepped) > 5
    assert seam_ratio(canvas.transpose(1, 2) + ramp) > 5  # the top/bottom border counts too
    # moving the step off the border (a roll) makes it an interior edge: the ratio drops
    assert seam_ratio(torch.roll(stepped, 16, dims=2)) < 1.7


def test_tiling_a_seamless_tile_stays_seamless():
    tiled = tile(smooth_periodic(16, 16), 2, 3)
    assert 0.4 < seam_ratio(tiled) < 1.7
    # and a crop of the tiling at any offset is still seamless where the canvas is
    assert seam_ratio(toroidal_crop(tiled[None], torch.tensor([[5, 7]]), (32, 48))[0]) < 1.7


def test_seam_ratio_of_noise_is_about_one_and_batches_agree():
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ratios = seam_ratio(noise)
    assert ratios.shape == (4,)
    assert all(0.8 < float(r) < 1.2 for r in ratios)
    assert math.isclose(float(ratios[1]), seam_ratio(noise[1]), rel_tol=1e-6)


# --- data: initialisation and ZCA ----------------------------------------------------------------


def test_noise_init_shapes_and_labels():
    data = tiny_data()
    canvases, labels = init_canvases(data, per_class=2, canvas_size=3, generator=torch.Generator().manual_seed(0))
    assert canvases.shape == (6, 3, 24, 24) and canvases.dtype == torch.float32
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert 0.8 < float(canvases.std()) < 1.2


def test_real_init_fills_tiles_with_real_images_of_the_class():
    data = tiny_data()
    real = data.preprocess(data.train_images)
    canvases, labels = init_canvases(data, per_class=1, canvas_size=2, init="real",
                                     generator=torch.Generator().manual_seed(0))
    assert canvases.shape == (3, 3, 16, 16)
    for canvas, label in zip(canvases, labels.tolist()):
        found = []
        for r in range(2):
            for c in range(2):
                piece = canvas[:, r * IMAGE:(r + 1) * IMAGE, c * IMAGE:(c + 1) * IMAGE]
                match = [i for i in range(len(real)) if torch.equal(real[i], piece)]
                assert len(match) == 1, "every tile is one real training image"
                assert int(data.train_labels[match[0]]) == label
                found.append(match[0])
        assert len(set(found)) == 4, "the tiles of a canvas are different images"


def test_real_init_needs_enough_images():
    with pytest.raises(ValueError, match="smaller canvas_size"):
        init_canvases(tiny_data(per_class=3), per_class=1, canvas_size=2, init="real")


def test_zca_data_is_refused_with_advice():
    data = tiny_data(zca=True)
    with pytest.raises(ValueError, match=r"zca=False"):
        check_texture_data(data)
    with pytest.raises(ValueError, match="ZCA"):
        init_canvases(data, per_class=1)
    check_texture_data(tiny_data())  # pixel-space data passes


# --- evaluation transform ------------------------------------------------------------------------


def test_crop_transform_takes_one_toroidal_crop_per_canvas():
    transform = crop_transform(8)
    canvases = torch.randn(5, 3, 16, 16)
    out = transform(canvases, torch.Generator().manual_seed(7))
    offsets = random_offsets(5, 16, torch.Generator().manual_seed(7))  # the same draws
    assert out.shape == (5, 3, 8, 8)
    assert torch.equal(out, toroidal_crop(canvases, offsets, 8))
    image = torch.randn(2, 3, 8, 8)  # a real image is a 1x1 canvas: it comes back rolled
    rolled = transform(image, torch.Generator().manual_seed(1))
    r, c = random_offsets(2, 8, torch.Generator().manual_seed(1))[0].tolist()
    assert torch.equal(rolled[0], torch.roll(image[0], (-r, -c), (1, 2)))


# --- export --------------------------------------------------------------------------------------


def test_export_writes_pngs_of_the_right_size(tmp_path):
    from PIL import Image

    data = tiny_data()
    canvases, labels = init_canvases(data, per_class=2, canvas_size=2, generator=torch.Generator().manual_seed(0))
    paths = export_pngs(canvases, labels, data.classes, data, tmp_path, upscale=4)
    assert len(paths) == 6 * 2 + 1 and all(p.exists() for p in paths)
    tile_png = Image.open(tmp_path / "class_1_0_tile.png")
    assert tile_png.size == (64, 64) and tile_png.mode == "RGB"
    assert Image.open(tmp_path / "class_1_0_tiled.png").size == (192, 192)
    sheet = Image.open(paths[-1])
    assert paths[-1].name == "sheet.png" and sheet.size == ((16 + 2) * 2 * 4 + 8, (16 + 2) * 3 * 4 + 8)
    # pixels are the deprocessed canvas, each an upscale x upscale block
    pixels = torch.from_numpy(np.array(tile_png)).permute(2, 0, 1).float() / 255
    expected = data.deprocess(canvases[2])
    torch.testing.assert_close(pixels[:, ::4, ::4], expected, atol=1 / 255, rtol=0)
    torch.testing.assert_close(pixels[:, 3::4, 3::4], expected, atol=1 / 255, rtol=0)


def test_export_grayscale(tmp_path):
    from PIL import Image

    data = tiny_data(channels=1)
    canvases, labels = init_canvases(data, per_class=1, canvas_size=2)
    paths = export_pngs(canvases, labels, data.classes, data, tmp_path, upscale=2)
    assert Image.open(paths[0]).mode == "L" and Image.open(paths[0]).size == (32, 32)
    # one canvas per class: the sheet is a row of the three classes, not a column
    assert Image.open(paths[-1]).size == (((16 + 2) * 3 + 2) * 2, (16 + 2 + 2) * 2)


def test_cli_export(tmp_path):
    from PIL import Image

    from mttlib.io import atomic_save

    canvases = torch.randn(2, 3, 16, 16)
    config = {"dataset": "tiny", "data": {"mean": [0.5] * 3, "std": [0.25] * 3, "classes": ["cat", "dog"]}}
    atomic_save({"images": canvases, "labels": torch.tensor([0, 1]), "config": config}, tmp_path / "set.pt")
    assert texture.cli(["export", str(tmp_path / "set.pt"), "--out", str(tmp_path / "png"), "--upscale", "2"]) == 0
    assert Image.open(tmp_path / "png" / "dog_tiled.png").size == (96, 96)
    assert (tmp_path / "png" / "sheet.png").exists()
    atomic_save({"images": canvases}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a texture set"):
        texture.cli(["export", str(tmp_path / "bad.pt")])


# --- figures -------------------------------------------------------------------------------------


def test_shirt_mask_is_a_symmetric_shirt():
    mask = viz.shirt_mask(64, 64)
    assert mask.dtype == torch.bool and mask.shape == (64, 64)
    assert torch.equal(mask, mask.flip(1))  # left-right symmetric
    assert 0.3 < float(mask.float().mean()) < 0.7
    assert mask[19, 2] and not mask[60, 5]  # the sleeves stick out, the hem does not
    assert mask[40, 32] and not mask[2, 32]  # body filled, neckline open at the top


def test_texture_figures():
    canvas = torch.rand(3, 16, 16)
    fig = viz.tiling_figure(canvas, 2, 3, zoom=1.5)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[1].images[0].get_array().shape[:2] == (32, 48)
    shirt = viz.garment_figure(canvas, tiles=4)
    rgba = shirt.axes[0].images[0].get_array()
    assert rgba.shape == (256, 256, 4)  # 4 x 4 tiles of 16 px, upscaled 4 x for a smooth outline
    assert torch.equal(torch.from_numpy(rgba[..., 3] > 0.5), viz.shirt_mask(256, 256))
    torch.testing.assert_close(torch.from_numpy(rgba[64:128:4, 128:192:4, :3]).float(), canvas.permute(1, 2, 0))
    assert isinstance(viz.garment_figure(torch.rand(1, 8, 8), tiles=2), Figure)
    with pytest.raises(ValueError, match="deprocess"):
        viz.tiling_figure(torch.rand(2, 3, 8, 8))


def test_tiling_widget_redraws_the_figure_functions(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    calls = []
    monkeypatch.setattr(viz, "tiling_figure", lambda canvas, rows, cols, zoom: calls.append(
        ("tiling", canvas, rows, zoom)) or Figure())
    monkeypatch.setattr(viz, "garment_figure", lambda canvas, tiles, zoom: calls.append(
        ("garment", canvas, tiles, zoom)) or Figure())
    data = tiny_data()
    canvases, _ = init_canvases(data, per_class=1, canvas_size=2, generator=torch.Generator().manual_seed(0))
    box = texture.tiling_widget(canvases, data.classes, data)
    assert isinstance(box, widgets.VBox)
    pick, tiles, zoom = box.children[0].children
    assert [c[0] for c in calls] == ["tiling", "garment"]  # drawn once at start
    tiles.value, zoom.value, pick.value = 2, 1.5, 2
    kind, canvas, count, scale = calls[-2]
    assert kind == "tiling" and count == 2 and scale == 1.5
    assert torch.equal(canvas, data.deprocess(canvases[2]))  # the chosen class's canvas, in [0, 1]
    assert calls[-1][0] == "garment" and calls[-1][2] == 2


def test_evaluate_textures_runs_textures_and_baselines_under_one_recipe():
    data = tiny_data()
    canvases, labels = init_canvases(data, per_class=1, canvas_size=2, generator=torch.Generator().manual_seed(0))
    results = texture.evaluate_textures(canvases, labels, data, lr=0.02, epochs=2, num_runs=1,
                                        baselines=("real", "real_tiles"), device="cpu", progress=False,
                                        model_kwargs={"depth": 1, "width": 8})
    assert list(results) == ["textures", "real", "real_tiles"]
    for name, result in results.items():
        assert 0.0 <= result.mean <= 1.0
        assert result.config["train_transform"] is True and result.config["epochs"] == 2
        assert result.config["num_images"] == 3
    assert results["textures"].config["lr"] == 0.02 and results["real"].config["lr"] == 0.01
    with pytest.raises(ValueError, match="unknown baseline"):
        texture.evaluate_textures(canvases, labels, data, lr=0.02, epochs=1, num_runs=1, baselines=("fake",),
                                  device="cpu", progress=False, model_kwargs={"depth": 1, "width": 8})

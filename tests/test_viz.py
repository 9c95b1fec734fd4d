"""Figures, the distillation GIF, saved figures and recorded results (mttlib.viz).

Each figure test reads back what was drawn (pixels, line data, bar heights) and compares it with
the numbers it was drawn from, computed here independently.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from mttlib import viz
from mttlib.io import atomic_save


def solid(*colours: tuple[float, float, float], side: int = 2) -> torch.Tensor:
    """Images ``[N, 3, side, side]``, each of one colour."""
    return torch.tensor(colours, dtype=torch.float32)[:, :, None, None].expand(-1, -1, side, side).clone()


RED, GREEN, BLUE, WHITE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0)


# --- the distillation GIF ------------------------------------------------------------------------


def write_run(folder, snapshots):
    for iteration, images in snapshots:
        atomic_save({"iteration": iteration, "images": images}, folder / "snapshots" / f"iter_{iteration:06d}.pt")


def test_gif_from_a_run_folder_has_one_frame_per_snapshot_in_order(tmp_path):
    snapshots = [(0, solid(RED, GREEN, BLUE)), (5, solid(GREEN, BLUE, RED)), (10, solid(BLUE, RED, GREEN))]
    write_run(tmp_path, snapshots)
    gif = viz.distillation_gif(tmp_path, None, tmp_path / "out" / "anim.gif", ncols=2, scale=3, duration_ms=80)
    with Image.open(gif) as im:
        assert im.n_frames == 3
        # two columns of 2 px images with 1 px gaps: 7 x 7 px, three times larger, under a 14 px caption
        assert im.size == (21, 14 + 21)
        for k, (_, images) in enumerate(snapshots):
            im.seek(k)
            frame = np.asarray(im.convert("RGB"))
            for i, (row, col) in enumerate([(0, 0), (0, 1), (1, 0)]):
                y, x = 14 + 3 * (1 + 3 * row), 3 * (1 + 3 * col)
                expected = (255 * images[i, :, 0, 0]).numpy()
                assert np.abs(frame[y + 1, x + 1] - expected).max() <= 8, (k, i)  # GIF palette rounding
            assert im.info["duration"] == (1500 if k == 2 else 80)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anim.gif"]  # no temporary file left


def test_gif_from_a_list_undoes_the_preprocessing_with_data(tmp_path):
    data = SimpleNamespace(deprocess=lambda x: (x + 1) / 2)  # network input in [-1, 1] -> pixels
    gif = viz.distillation_gif([(3, solid(RED, BLUE) * 2 - 1)], data, tmp_path / "a.gif", scale=1)
    with Image.open(gif) as im:
        assert im.n_frames == 1
        assert np.abs(np.asarray(im.convert("RGB"))[14 + 1, 1 + 3].astype(int) - [0, 0, 255]).max() <= 8
    with pytest.raises(ValueError, match="no snapshots"):
        viz.distillation_gif([], None, tmp_path / "b.gif")


def test_a_failed_gif_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "anim.gif"
    path.write_bytes(b"the previous animation")

    def broken_save(self, fp, *args, **kwargs):
        handle = open(fp, "wb") if isinstance(fp, (str, type(path))) else fp
        handle.write(b"GIF89a half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        viz.distillation_gif([(0, solid(RED))], None, path)
    assert path.read_bytes() == b"the previous animation"
    assert [p.name for p in tmp_path.iterdir()] == ["anim.gif"]


# --- saving and recording -----------------------------------------------------------------------


def test_save_figure_writes_a_png_and_merges_captions(tmp_path):
    first = viz.save_figure(viz.image_grid(solid(RED, GREEN)), tmp_path, "one", "two solid images")
    viz.save_figure(viz.image_grid(solid(BLUE)), tmp_path, "two", "one blue image")
    viz.save_figure(viz.image_grid(solid(BLUE)), tmp_path, "three")
    assert first == tmp_path / "figures" / "one.png"
    with Image.open(first) as im:
        assert im.format == "PNG"
    captions = json.loads((tmp_path / "figures" / "captions.json").read_text())
    assert captions == {"one.png": "two solid images", "two.png": "one blue image"}
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["captions.json", "one.png", "three.png",
                                                                         "two.png"]


def test_record_results_displays_marked_json_and_writes_it(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    clean = viz.record_results({"accuracy": torch.tensor(0.25), "runs": 3}, tmp_path, "nb")
    assert clean == {"accuracy": 0.25, "runs": 3} and type(clean["accuracy"]) is float
    (obj, kw), = shown
    assert obj == {"application/json": clean} and kw["metadata"]["application/json"][viz.RESULTS_MARKER]
    assert json.loads((tmp_path / "results" / "nb.json").read_text()) == clean


# --- figures ------------------------------------------------------------------------------------


def pixels(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_class_grid_puts_each_class_on_its_row():
    images = solid(RED, GREEN, BLUE, WHITE, (0.5, 0.5, 0.5))
    labels = torch.tensor([2, 0, 1, 0, 2])
    fig = viz.class_grid(images, labels, ["a", "b", "c"], per_class=2)
    axes = np.array(fig.axes).reshape(3, 2)
    assert np.allclose(pixels(axes[0, 0])[0, 0], GREEN) and np.allclose(pixels(axes[0, 1])[0, 0], WHITE)
    assert np.allclose(pixels(axes[1, 0])[0, 0], BLUE) and not axes[1, 1].images  # class b has one image
    assert np.allclose(pixels(axes[2, 1])[0, 0], 0.5)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]


def test_image_grid_keeps_one_channel_images_grey():
    fig = viz.image_grid(torch.rand(5, 1, 4, 4), ncols=3, titles=list("abcde"))
    assert len(fig.axes) == 6 and len(fig.axes[5].images) == 0
    assert pixels(fig.axes[0]).shape == (4, 4) and fig.axes[0].images[0].get_cmap().name == "gray"
    assert fig.axes[4].get_title() == "e"


def test_distillation_curves_draw_the_running_mean():
    loss = [1.0, 0.8, 0.9, 0.5, 0.6, 0.3]
    metrics = [{"iteration": i, "loss": v, "syn_lr": 0.01 * (i + 1)} for i, v in enumerate(loss)]
    fig = viz.distillation_curves_figure(metrics, smooth=3)
    raw, running = fig.axes[0].lines[:2]
    assert list(raw.get_ydata()) == loss
    assert list(running.get_xdata()) == [2, 3, 4, 5]
    np.testing.assert_allclose(running.get_ydata(), np.convolve(loss, np.ones(3) / 3, mode="valid"))
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [m["syn_lr"] for m in metrics])


def test_trajectory_figures_plot_the_given_numbers():
    spans = {1: torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]), 2: torch.tensor([[4.0, 6.0], [6.0, 8.0]])}
    ax = viz.segment_length_figure(spans).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [2.0, 3.0, 4.0])  # the mean over experts
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [5.0, 7.0])
    assert len(ax.collections) == 2  # one band per M
    steps = viz.step_length_figure([torch.tensor([3.0, 2.0, 1.0])]).axes[0]
    assert list(steps.lines[0].get_xdata()) == [1, 2, 3] and list(steps.lines[0].get_ydata()) == [3.0, 2.0, 1.0]
    coords = [torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]])]
    proj = viz.trajectory_projection_figure(coords, torch.tensor([0.7, 0.2])).axes[0]
    assert proj.get_xlabel() == "PC 1 (70% of variance)" and proj.get_ylabel() == "PC 2 (20% of variance)"
    assert list(proj.lines[2].get_xdata()) == [3.0]  # the star at the last epoch
    trajectories = [SimpleNamespace(meta={"train_acc": [0.3, 0.5], "test_acc": [0.2, 0.4], "init_test_acc": 0.1})]
    acc = viz.expert_accuracy_figure(trajectories).axes[0]
    assert list(acc.lines[0].get_ydata()) == [0.1, 0.2, 0.4] and list(acc.lines[1].get_xdata()) == [1, 2]


def test_bar_figures_show_the_values_and_mark_soft_labels():
    estimates = {"ipc 1": {"unroll": 10.0, "recompute": 2.0}, "ipc 10": {"unroll": 30.0, "recompute": 4.0}}
    ax = viz.memory_figure(estimates, {"24 GB GPU": 22.4}).axes[0]
    assert [[bar.get_height() for bar in c] for c in ax.containers] == [[10.0, 30.0], [2.0, 4.0]]
    assert [line.get_ydata()[0] for line in ax.lines] == [22.4]
    rows = [{"variant": "mtt", "images": "raw", "labels": "hard", "mean": 0.4, "std": 0.01},
            {"variant": "tesla", "images": "ema", "labels": "soft", "mean": 0.5, "std": 0.02}]
    ax = viz.ablation_figure(rows).axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert [b.get_height() for b in bars] == [0.4, 0.5] and [b.get_hatch() for b in bars] == [None, "//"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mtt", "tesla (ema) soft"]
    probs = torch.softmax(torch.randn(4, 3), 1)
    heat = viz.soft_labels_figure(probs, ["a", "b", "c"], torch.tensor([0, 1, 2, 0])).axes[0]
    np.testing.assert_allclose(pixels(heat), probs.numpy(), rtol=1e-6)


def test_figures_are_detached_from_pyplot():
    plt.close("all")
    figures = [viz.image_grid(torch.rand(2, 3, 4, 4)), viz.tiling_figure(torch.rand(3, 4, 4)),
               viz.garment_figure(torch.rand(3, 4, 4)), viz.memory_figure({"a": {"x": 1.0}})]
    assert all(isinstance(f, Figure) for f in figures)
    assert plt.get_fignums() == []  # a notebook shows the returned figure once, not twice

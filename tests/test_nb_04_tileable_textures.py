"""Notebook 04 at smoke size: it distills textures of four classes and measures their seams.

Smoke size learns little (8 iterations of a width-8 ConvNet, one expert of 2 epochs), but its
large pixel step (lr_img 1e4) moves the canvases far enough for the seams to show. Measured at
smoke size over seeds 0-4 (mean over the four classes): texture seam ratio 1.00-1.17 (score
0.07-0.23); the same run without wrap-around 0.34-0.38 (score 0.97-1.07); plain distillation of
photos 2.1 at seed 0 (score 0.75).
"""

from nbharness import run_notebook


def test_notebook_04_tileable_textures():
    r = run_notebook("04_tileable_textures")
    assert r["classes"] == ["airplane", "automobile", "frog", "ship"]
    assert r["canvas_shape"] == [3, 64, 64] and r["iterations"] == 8
    assert r["crop_check_max_diff"] == 0.0  # the didactic torch.roll crop equals toroidal_crop
    # texture mode: the border looks like the inside; without wrap-around: a faint frame;
    # plain distilled photos: cuts
    assert 0.8 < r["texture_seam_ratio"] < 1.3
    assert r["control_seam_ratio"] < 0.6
    assert r["plain_seam_ratio"] > 1.5
    assert r["texture_seam_score"] < 0.5 * r["control_seam_score"]
    assert r["texture_seam_score"] < 0.6 * r["plain_seam_score"]
    # per class a tile and a 3 x 3 tiling, then the sheet; canvases of 64 px upscaled 4 x
    assert r["png_count"] == 2 * 4 + 1
    assert r["png_tile_size"] == [256, 256] and r["png_tiled_size"] == [768, 768]
    assert r["png_sheet_size"] == [((64 + 2) * 4 + 2) * 4, (64 + 2 + 2) * 4]
    for key in ("texture_acc_mean", "real_acc_mean"):
        assert 0.0 <= r[key] <= 1.0
    assert r["chance"] == 0.25 and r["syn_lr"] > 0
    assert r["seconds"] < 90

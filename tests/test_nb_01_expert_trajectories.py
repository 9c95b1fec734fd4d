"""Notebook 01 at smoke size: it trains (or loads) two tiny experts and measures their trajectories.

The bounds were measured on the smoke experts (2 experts x 2 epochs, ConvNet width 8, seeds 0
and 1): test accuracy 0.140 and 0.147 after two epochs (0.069 and 0.093 before training), training
loss 2.33 -> 2.30, step lengths 0.10 then 0.075, straightness 0.97. A loop that does not train (no optimizer step, a
wrong sign, labels shuffled against the images) stays at chance and keeps the loss flat.
"""

from nbharness import run_notebook


def test_notebook_01_expert_trajectories():
    r = run_notebook("01_expert_trajectories")
    assert (r["num_experts"], r["epochs"], r["width"]) == (2, 2, 8)
    # ConvNet width 8, depth 3, 3x32x32 -> 10 classes: convs, instance norms, linear on 8x4x4
    assert r["numel"] == (3 * 8 * 9 + 8) + 2 * (8 * 8 * 9 + 8) + 3 * 2 * 8 + 8 * 16 * 10 + 10
    assert r["final_test_acc_mean"] > 0.12 and r["final_test_acc_min"] > 0.115
    assert r["final_test_acc_mean"] > r["init_test_acc_mean"] + 0.02
    assert r["last_train_loss_mean"] < r["first_train_loss_mean"] - 0.015
    assert 0 < r["last_step_length"] < r["first_step_length"] < 1.0
    assert r["segment_m"] == 2
    # a 2-epoch segment is longer than one step and no longer than the two steps together
    assert r["first_step_length"] < r["segment_length"] <= r["first_step_length"] + r["last_step_length"] + 1e-9
    assert 0.5 < r["straightness"] <= 1.0 + 1e-9
    assert 0.3 < r["pca_explained_2d"] <= 1.0 + 1e-9
    assert 0.8 < r["own_plane_first_axis"] <= 1.0 + 1e-9  # measured 0.97 and 0.99: nearly straight paths

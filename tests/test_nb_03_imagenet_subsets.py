"""Notebook 03 at smoke size, offline: the 128 px pipeline on the stand-in, and memory at paper size.

The data root handed to the notebook is an empty folder and ``MTT_IMAGENET`` is unset, so the
notebook must notice that ImageNet is missing and say it used the stand-in, whose classes are
CIFAR-10's. The memory bounds are independent of ``estimate_memory``: an unrolled iteration
must keep at least the first convolution's output of every student step
(``syn_steps x batch_syn x width x 128 x 128`` floats), and ``recompute`` at least the student's
parameters after every step.
"""

from nbharness import run_notebook

from mttlib.imagenet import MTT_PAPER_ACCURACY
from mttlib.models import make_model, parameter_count

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_notebook_03_imagenet_subsets(tmp_path, monkeypatch):
    monkeypatch.delenv("MTT_IMAGENET", raising=False)
    r = run_notebook("03_imagenet_subsets", DATA_ROOT=str(tmp_path / "no-imagenet-here"))
    assert r["used_standin"] is True and "stand-in for an ImageNet subset" in r["dataset"]
    assert r["classes"] == CIFAR_CLASSES  # never passed off as ImageNet classes
    assert (r["image_size"], r["depth"], r["width"]) == (128, 5, 4)
    assert r["train_images"] == 10 * 4 and r["num_experts"] == 1 and r["expert_epochs"] == 2
    assert r["distilled_images"] == [10, 3, 128, 128] and r["iterations"] == 2
    assert 0 < r["first_loss"] < 1e3 and 0 < r["last_loss"] < 1e3 and r["syn_lr"] > 0
    assert 0 <= r["distilled_acc_mean"] <= 1 and 0 <= r["random_real_acc_mean"] <= 1

    # memory at the paper's settings (ipc 10, ConvNetD5 width 128, 20 steps of 20 images)
    assert (r["memory_syn_steps"], r["memory_batch_syn"]) == (20, 20)
    gib = 2**30
    first_conv_maps = 20 * 20 * 128 * 128 * 128 * 4 / gib  # one float map per step, image and channel
    params = parameter_count(make_model("convnetd5", 3, 10, 128)) * 4 / gib
    assert r["memory_unroll_gib"] > first_conv_maps
    assert r["memory_recompute_gib"] > 21 * params
    assert r["memory_recompute_gib"] < r["memory_unroll_gib"] / 4

    assert r["paper_imagenette_ipc1"] == MTT_PAPER_ACCURACY["imagenette"][1][0] == 47.7
    assert [row["ipc"] for row in r["accuracy_table"]] == [1, 1]
    assert "stand-in" in r["accuracy_table"][0]["method"]
    assert all(row["epochs"] for row in r["accuracy_table"])  # every table says how long each row trained
    assert r["seconds"] < 90

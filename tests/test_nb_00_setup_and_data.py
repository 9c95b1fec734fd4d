"""Notebook 00 at smoke size: it loads the embedded data and checks the building blocks."""

from nbharness import run_notebook


def test_notebook_00_setup_and_data():
    r = run_notebook("00_setup_and_data")
    assert (r["num_train"], r["num_test"], r["num_classes"]) == (5000, 1000, 10)
    # ConvNet width 128, depth 3 on 3x32x32 with 10 classes, counted by hand:
    # convs 3*128*9+128, 2 * (128*128*9+128); instance norms 3 * 2*128; linear 128*4*4*10+10
    assert r["convnet_parameters"] == (3 * 128 * 9 + 128) + 2 * (128 * 128 * 9 + 128) + 3 * 256 + 2048 * 10 + 10
    assert r["functional_max_diff"] < 1e-5
    assert r["normalise_roundtrip_error"] < 1e-5
    assert r["dsa_groups"] == 6 and r["dsa_replay_identical"] is True
    assert r["zca_roundtrip_error"] < 1e-3
    assert r["seconds"] < 60

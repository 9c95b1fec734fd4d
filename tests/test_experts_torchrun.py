"""`torchrun` splits the experts over processes; the folder equals a single process's bit for bit.

Both runs use one thread per process (torchrun sets OMP_NUM_THREADS=1; the single-process run is
given the same), because CPU kernels may sum in another order with another number of threads.
"""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from mttlib import experts as ex

pytestmark = pytest.mark.slow


def _image_folder(root):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("test", 4)):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
                pixels[..., c] = pixels[..., c] // 2 + 128  # a colour cue per class
                Image.fromarray(pixels.numpy()).save(folder / f"{i:03d}.png")


def _args(data, out):
    return ["experts", "--dataset", f"folder:{data}", "--data-root", str(data.parent), "--model", "convnet",
            "--width", "4", "--num-experts", "5", "--epochs", "2", "--batch-size", "8", "--no-progress",
            "--device", "cpu", "--out", str(out)]


def test_torchrun_two_processes_write_what_one_process_writes(tmp_path):
    data = tmp_path / "imgs"
    _image_folder(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, "-m", "mttlib", *_args(data, tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "mttlib", *_args(data, tmp_path / "dist")], env=env, capture_output=True,
                          text=True, timeout=180)
    assert dist.returncode == 0, dist.stderr
    assert dist.stdout.count("final test accuracy") == 1, "rank 0 alone prints the summary"
    assert "rank 0 of 2: training experts [0, 2, 4]" in dist.stderr
    assert "rank 1 of 2: training experts [1, 3]" in dist.stderr

    a, b = ex.load_experts(tmp_path / "single"), ex.load_experts(tmp_path / "dist")
    assert [t.index for t in b] == list(range(5))
    for ta, tb in zip(a, b):
        assert torch.equal(ta.snapshots, tb.snapshots), f"expert {ta.index} differs"
        volatile = {"wall_time_s"}
        assert {k: v for k, v in ta.meta.items() if k not in volatile} == \
               {k: v for k, v in tb.meta.items() if k not in volatile}
    assert (tmp_path / "single" / "config.json").read_text() == (tmp_path / "dist" / "config.json").read_text()

"""Shared fixtures; the notebook harness is importable as `nbharness`."""

import sys
from pathlib import Path

# tests/ holds the notebook harness, imported by the notebook tests as `nbharness`
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pytest


@pytest.fixture(scope="session")
def reference_zca():
    """The paper's ZCA of the embedded set, computed independently of the kit's ZCA class.

    The reference implementation scales the pixels to [0, 1] (``ToTensor()``) and fits kornia's
    ``ZCAWhitening(eps=0.1)``: the unbiased covariance of the flattened train images,
    ``C = U diag(S) U^T``, and ``W = U diag((S + 0.1)^-1/2) U^T``. Here in float64 with numpy.
    Returns ``whiten(uint8 images) -> float64 [N, D]`` and the dataset it was fitted on.
    """
    from mttlib.data import load_dataset

    data = load_dataset("cifar10-mini")
    x = data.train_images.reshape(len(data.train_images), -1).numpy().astype(np.float64) / 255.0
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (len(x) - 1)
    s, u = np.linalg.eigh(cov)
    w = (u * (1.0 / np.sqrt(s + 0.1))) @ u.T

    def whiten(images):
        flat = images.reshape(len(images), -1).numpy().astype(np.float64) / 255.0
        return (flat - mean) @ w

    return whiten, data

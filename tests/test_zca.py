"""mttlib.zca: the paper's ZCA whitening, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mttlib.data import load_dataset
from mttlib.io import atomic_save, safe_load
from mttlib.zca import RECIPE, ZCA, check_recipe


def _relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_kit_whitening_of_real_images_matches_the_reference_recipe(reference_zca):
    whiten, plain = reference_zca
    data = load_dataset("cifar10-mini", zca=True)
    assert data.zca.eps == 0.1
    x_train, _ = data.train_tensors()
    x_test, _ = data.test_tensors()
    assert _relative(x_train.reshape(len(x_train), -1), whiten(plain.train_images)) < 1e-3
    assert _relative(x_test.reshape(len(x_test), -1), whiten(plain.test_images)) < 1e-3
    # the deprocessed images are the pixels again (the inverse is exact up to float round-off)
    back = data.deprocess(x_test[:20])
    assert (back * 255 - plain.test_images[:20].float()).abs().max() < 0.05


def _toy(n=3000, seed=0, shape=(2, 2, 2)):
    """Correlated samples [n, *shape] with a well-conditioned covariance."""
    d = int(np.prod(shape))
    g = torch.Generator().manual_seed(seed)
    mixing = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + 2.0).reshape(n, *shape)


def _cov(flat):
    centred = flat - flat.mean(0)
    return centred.T @ centred / (flat.shape[0] - 1)


def test_zca_whitens_to_identity_for_tiny_eps():
    x = _toy()
    zca = ZCA.fit(x, eps=1e-9)
    white = zca.transform(x).reshape(len(x), -1)
    torch.testing.assert_close(_cov(white), torch.eye(8, dtype=torch.float64), atol=1e-4, rtol=0)
    assert white.mean(0).abs().max() < 1e-5


def test_zca_eps_shrinks_eigenvalues_to_s_over_s_plus_eps():
    x = _toy()
    eps = 0.1
    s = np.linalg.eigvalsh(_cov(x.reshape(len(x), -1)).numpy())
    white = ZCA.fit(x, eps=eps).transform(x).reshape(len(x), -1)
    np.testing.assert_allclose(np.linalg.eigvalsh(_cov(white).numpy()), np.sort(s / (s + eps)), rtol=1e-4)


@pytest.mark.parametrize("n, shape", [(500, (2, 2, 2)), (10, (2, 3, 4))])  # N > D, and N < D (Gram path)
def test_zca_matrix_matches_an_svd_of_the_data(n, shape):
    x = _toy(n, shape=shape)
    eps = 0.1
    flat = x.reshape(n, -1).numpy()
    d = flat.shape[1]
    centred = flat - flat.mean(0)
    _, sigma, vt = np.linalg.svd(centred, full_matrices=True)  # cov = V diag(sigma^2/(n-1)) V^T
    s = np.zeros(d)
    s[:len(sigma)] = sigma ** 2 / (n - 1)  # directions the data does not span have variance 0
    expected = vt.T @ np.diag(1 / np.sqrt(s + eps)) @ vt
    expected_inv = vt.T @ np.diag(np.sqrt(s + eps)) @ vt
    zca = ZCA.fit(x, eps=eps)
    np.testing.assert_allclose(zca.matrix.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(zca.inverse_matrix.numpy(), expected_inv, atol=1e-6)
    np.testing.assert_allclose(zca.mean.numpy(), flat.mean(0), atol=1e-6)
    assert zca.matrix.dtype == torch.float32 and zca.shape == shape


def test_zca_inverse_undoes_transform_and_is_differentiable():
    x = _toy(400)
    zca = ZCA.fit(x, eps=0.1)
    torch.testing.assert_close(zca.inverse(zca.transform(x)), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zca.transform(x[0]), zca.transform(x[:1])[0])  # one sample
    probe = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(zca.transform, (probe,))
    assert torch.autograd.gradcheck(zca.inverse, (probe,))
    with pytest.raises(ValueError, match="fitted on samples of shape"):
        zca.transform(torch.zeros(3, 8))


def test_zca_state_dict_round_trip_and_determinism(tmp_path):
    x = _toy(400)
    zca = ZCA.fit(x, eps=0.1)
    assert ZCA.fit(x, eps=0.1).fingerprint() == zca.fingerprint()  # same data, same ZCA
    assert ZCA.fit(x, eps=0.2).fingerprint() != zca.fingerprint()
    state = zca.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    atomic_save(state, tmp_path / "zca.pt")
    again = ZCA.from_state_dict(safe_load(tmp_path / "zca.pt"))
    assert again.eps == 0.1 and again.shape == zca.shape and again.fingerprint() == zca.fingerprint()
    assert torch.equal(again.transform(x), zca.transform(x))
    with pytest.raises(ValueError, match="missing"):
        ZCA.from_state_dict({"mean": state["mean"]})
    with pytest.raises(ValueError, match="at least 2"):
        ZCA.fit(x[:1])




def test_check_recipe_refuses_other_whitening_and_says_to_retrain():
    check_recipe(None, "x")  # no ZCA: nothing to check
    check_recipe({"eps": 0.1, "recipe": RECIPE, "fingerprint": "abc"}, "x")
    for old in ({"eps": 0.1, "fingerprint": "abc"}, {"eps": 0.1, "recipe": "something-else"}):
        with pytest.raises(ValueError, match="runs/experts/a.*another recipe.*train the experts"):
            check_recipe(old, "runs/experts/a")

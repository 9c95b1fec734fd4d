"""Tests of mttlib.param: images learned through a Fourier or a Laplacian-pyramid basis.

The bases are checked against independent computations: decoding what was encoded gives the image
back (float64), autograd's gradients through ``decode`` match finite differences (gradcheck), the
preconditioner ``D Dᵀ`` is symmetric, positive and of mean eigenvalue 1 (built as a dense matrix),
and the pixel-space step the loop takes equals SGD with momentum on explicit coefficients. In the
loop: the option runs in normal and texture mode, resumes bit for bit, and a resumed run refuses
another ``param``.
"""

from __future__ import annotations

import pytest
import torch

from mttlib import param as P
from mttlib import run
from mttlib.data import ImageData

SHAPES = [(3, 8, 8), (3, 8, 6), (1, 6, 6), (3, 5, 7)]


def _bases(shape):
    colour = torch.tensor([[1.0, 0.8, 0.6], [0.8, 1.0, 0.7], [0.6, 0.7, 1.0]], dtype=torch.float64)
    m = P.colour_matrix(None, 3) if shape[0] == 1 else torch.linalg.cholesky(colour) @ torch.linalg.cholesky(colour).T
    return [P.Fourier(shape, m if shape[0] == 3 else None), P.Pyramid(shape), P.ImageParam()]


@pytest.mark.parametrize("shape", SHAPES)
def test_decode_inverts_encode_in_float64(shape):
    x = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for basis in _bases(shape):
        coeffs = basis.encode(x)
        assert torch.allclose(basis.decode(coeffs), x, atol=1e-12, rtol=0), basis
        assert all(c.dtype == torch.float64 for c in coeffs)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_decode_gradcheck_float64(shape):
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for basis in _bases(shape)[:2]:
        coeffs = [c.detach().requires_grad_(True) for c in basis.encode(x)]
        assert torch.autograd.gradcheck(lambda *cs: basis.decode(cs), coeffs), basis


def _dense(basis, shape):
    n = int(torch.tensor(shape).prod())
    eye = torch.eye(n, dtype=torch.float64).view(n, *shape)
    return basis.precondition(eye).reshape(n, n)


@pytest.mark.parametrize("shape", SHAPES)
def test_preconditioner_is_symmetric_positive_with_mean_eigenvalue_one(shape):
    for basis in _bases(shape)[:2]:
        p = _dense(basis, shape)
        assert torch.allclose(p, p.T, atol=1e-12), basis
        eig = torch.linalg.eigvalsh(p)
        assert eig.min() > 1e-4, basis  # invertible: every image can be reached
        if isinstance(basis, P.Pyramid) or shape[0] == 1:  # colour matrix given unnormalised in _bases
            assert eig.mean() == pytest.approx(1.0, abs=1e-9), basis


def test_fourier_prefers_low_frequencies_and_luminance():
    basis = P.Fourier((1, 16, 16))
    i = torch.arange(16, dtype=torch.float64)
    smooth = torch.cos(2 * torch.pi * i / 16)[None, None, :, None].expand(1, 1, 16, 16)
    checker = torch.cos(torch.pi * i)[None, None, :, None] * torch.cos(torch.pi * i)[None, None, None, :]
    gain = [float((basis.precondition(x) * x).sum() / (x * x).sum()) for x in (smooth, checker)]
    assert gain[0] > 20 * gain[1]  # 1/f²: the slowest wave gains much more than the finest
    assert gain[1] < 1


def test_colour_matrix_is_the_square_root_of_the_channel_covariance():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (40, 1, 8, 8), generator=g)
    images = (grey + torch.randint(-20, 21, (40, 3, 8, 8), generator=g)).clamp(0, 255).to(torch.uint8)
    data = ImageData(name="fake", train_images=images, train_labels=torch.zeros(40, dtype=torch.long),
                     test_images=images[:4], test_labels=torch.zeros(4, dtype=torch.long), classes=["a"],
                     mean=(0.5,) * 3, std=(0.25,) * 3)
    m = P.colour_matrix(data, 3)
    x = data.preprocess(images).transpose(0, 1).reshape(3, -1).double()
    cov = torch.cov(x)
    assert torch.allclose(m @ m, cov / torch.linalg.eigvalsh(cov).mean(), rtol=1e-6)
    assert torch.linalg.eigvalsh(m @ m)[-1] > 2.5  # correlated channels: one strong (luminance) direction


def test_pixel_step_equals_sgd_with_momentum_on_the_coefficients():
    shape, g = (3, 8, 8), torch.Generator().manual_seed(2)
    for basis in _bases(shape)[:2]:
        x0 = torch.randn(2, *shape, dtype=torch.float64, generator=g)
        grads = [torch.randn(2, *shape, dtype=torch.float64, generator=g) for _ in range(4)]
        coeffs = [c.clone().requires_grad_(True) for c in basis.encode(x0)]
        opt_c = torch.optim.SGD(coeffs, lr=0.3, momentum=0.5)
        x = x0.clone().requires_grad_(True)
        opt_x = torch.optim.SGD([x], lr=0.3, momentum=0.5)
        for grad in grads:
            opt_c.zero_grad()
            basis.decode(coeffs).backward(grad)  # the chain rule into the coefficients
            opt_c.step()
            x.grad = basis.precondition(grad)
            opt_x.step()
        assert torch.allclose(x.detach(), basis.decode(coeffs).detach(), atol=1e-12), basis


def test_unknown_param_is_refused():
    from mttlib.distill import DistillConfig

    with pytest.raises(ValueError, match="param must be one of"):
        DistillConfig(dataset="fake", ipc=1, param="wavelets")


@pytest.mark.parametrize("name", ["fourier", "pyramid"])
def test_distillation_with_a_basis_runs_resumes_bit_for_bit_and_refuses_another(tmp_path, name):
    from test_distill import config, fake_data, fake_experts

    data, experts = fake_data(), fake_experts()
    cfg = config(iterations=4, checkpoint_every=2, param=name)
    full = run.distill(cfg, experts, data, tmp_path / "full", progress=False)
    plain = run.distill(cfg.replace(param="pixels"), experts, data, tmp_path / "pixels", progress=False)
    assert full.images.shape == plain.images.shape  # the same number of stored pixels
    assert not torch.equal(full.images, plain.images)
    run.distill(cfg.replace(iterations=2), experts, data, tmp_path / "part", progress=False)
    resumed = run.distill(cfg, experts, data, tmp_path / "part", progress=False, resume=True)
    assert torch.equal(resumed.images, full.images) and resumed.syn_lr == full.syn_lr
    with pytest.raises(ValueError, match="param"):
        run.distill(cfg.replace(param="pixels"), experts, data, tmp_path / "part", progress=False, resume=True)


def test_texture_canvases_learn_through_the_fourier_basis(tmp_path):
    from test_texture import _texture_config, tiny_data, tiny_experts

    from mttlib import texture

    data = tiny_data()
    experts = tiny_experts(data)
    cfg = _texture_config(data, param="fourier")
    full = texture.distill_textures(data, experts, tmp_path / "full", config=cfg, classes=[0, 2], progress=False)
    assert full.images.shape == (2, 3, 16, 16) and run.load_distilled(tmp_path / "full")["images"].shape == (2, 3, 16, 16)
    texture.distill_textures(data, experts, tmp_path / "part", config=cfg.replace(iterations=2), classes=[0, 2],
                             progress=False)
    resumed = texture.distill_textures(data, experts, tmp_path / "part", config=cfg, classes=[0, 2], progress=False,
                                       resume=True)
    assert torch.equal(resumed.images, full.images)

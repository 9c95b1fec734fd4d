"""The ConvNet's instance norm, 2x2 average pooling and classifier, with their derivatives written out.

A distillation iteration differentiates *through* the student's gradient steps, so every layer is
differentiated twice: once for the student's gradient, once more for the meta-gradient. PyTorch
builds the second derivative of its norm kernels from dozens of small operations (about 140 operator
calls per instance norm per student step, half the calls of a whole step), and on a GPU each call
costs a kernel launch. Here the first derivative is PyTorch's own fused kernel and the second is
written out in about 40 mostly small operations, so a student step needs far fewer operator calls on every
device, with the same values up to float rounding (checked in float64 against autograd, in
``tests/test_models.py``). The pooling's derivative is another pooling, written the same way, and the
classifier's second derivative is three matrix products.

The modules keep the parameter names and order of ``nn.GroupNorm``, ``nn.AvgPool2d`` and ``nn.Linear``, so expert
trajectories do not change. Derivatives of third order are refused (the kit never needs them). Under
autocast (``precision="bf16"``/``"fp16"``) the layers are PyTorch's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["InstanceNorm", "AvgPool2x2", "Linear"]


def _channel(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1)


def _refuse_third_order(*cotangents: Tensor) -> None:
    # the second derivatives below use saved tensors that autograd does not follow back to x
    if torch.is_grad_enabled() and any(c is not None and c.requires_grad for c in cotangents):
        raise RuntimeError("mttlib.layers computes derivatives up to the second order; a third derivative (a "
                           "backward pass with create_graph=True through a second derivative) is not supported")


def _autocast(x: Tensor) -> bool:
    # under autocast the forward casts inside these functions but their backward would not: PyTorch's own
    # layers then (mixed precision is an option; the written-out derivatives are for float32 and float64)
    return torch.is_autocast_enabled(x.device.type)


def _mean(v: Tensor) -> Tensor:
    return v.mean((2, 3), keepdim=True)


def _dot(u: Tensor, v: Tensor) -> Tensor:
    """``sum(u v)`` per image and channel, ``[N, C, 1, 1]``, without a full-size product in memory."""
    n, c, h, w = u.shape
    # reshape, not view: a cotangent may arrive expanded or in another layout (reshape then copies)
    return torch.bmm(u.reshape(n * c, 1, h * w), v.reshape(n * c, h * w, 1)).view(n, c, 1, 1)


class _InstanceNormGrad(torch.autograd.Function):
    """``(dx, dweight, dbias)`` of the instance norm for the upstream gradient ``dy``; its own
    backward is the norm's second derivative, written out."""

    @staticmethod
    def forward(dy: Tensor, x: Tensor, weight: Tensor, xh: Tensor, mean: Tensor, rstd: Tensor) -> Any:
        g = dy * _channel(weight)
        n, c, h, w = x.shape
        dx = torch.ops.aten.native_group_norm_backward(g, x, mean, rstd, None, n, c, h * w, c, [True, False, False])[0]
        return dx, (dy * xh).sum((0, 2, 3)), dy.sum((0, 2, 3))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        dy, _, weight, xh, _, rstd = inputs
        ctx.save_for_backward(dy, weight, xh, rstd)

    @staticmethod
    def backward(ctx: Any, a: Tensor, alpha: Tensor, beta: Tensor) -> tuple:
        _refuse_third_order(a, alpha, beta)
        # With g = dy w, P(v) = v - mean(v) - xh mean(xh v) (symmetric) and d xh = r P(d x): dx = r P(g). The
        # cotangents a, alpha, beta belong to dx, dweight and dbias; means and sums are per image and channel
        # (s_: sums of products). Written as per-(image, channel) coefficients times dy, a and xh, each result
        # is two or three full-size passes.
        dy, weight, xh, r = ctx.saved_tensors
        r = r.view(*r.shape, 1, 1)  # 1 / std per image and channel
        w, alpha, beta = _channel(weight), _channel(alpha), _channel(beta)
        hw = xh.shape[2] * xh.shape[3]
        m_a, m_dy = _mean(a), _mean(dy)
        s_a_xh, s_dy_xh, s_dy_a = _dot(a, xh), _dot(dy, xh), _dot(dy, a)
        wr = w * r
        q = torch.addcmul(torch.addcmul(s_dy_a, m_a, m_dy, value=-hw), s_a_xh, s_dy_xh, value=-1 / hw)  # sum P(a) dy
        grad_w = (r * q).sum((0, 2, 3))
        # beta + alpha xh + w r P(a)
        grad_dy = torch.addcmul(torch.addcmul(torch.addcmul(beta, wr, m_a, value=-1),
                                              torch.addcmul(alpha, wr, s_a_xh, value=-1 / hw), xh), wr, a)
        # x moves dweight = sum(dy xh) through xh, and dx through r and through the xh inside P
        u, ra = wr * r, r * alpha
        k, us = u * s_dy_xh, u * s_a_xh  # hw times the coefficients they stand for
        c0 = torch.addcmul(torch.addcmul(k * m_a, us, m_dy).mul_(1 / hw), ra, m_dy, value=-1)
        grad_x = torch.addcmul(c0, torch.addcmul(ra, u, s_a_xh, value=-1 / hw), dy)
        grad_x.addcmul_(k, a, value=-1 / hw)
        grad_x.addcmul_(torch.addcmul(torch.addcmul(ra * s_dy_xh, u, q), k, s_a_xh, value=-2 / hw), xh, value=-1 / hw)
        return grad_dy, grad_x, grad_w, None, None, None


class _InstanceNormFn(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Any:
        n, c, h, w = x.shape  # instance norm is group norm with one channel per group
        xh, mean, rstd = torch.native_group_norm(x, None, None, n, c, h * w, c, eps)
        return torch.addcmul(_channel(bias), xh, _channel(weight)), xh, mean, rstd

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight, _, _ = inputs
        _, xh, mean, rstd = output
        ctx.mark_non_differentiable(xh, mean, rstd)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for the three outputs above
        ctx.save_for_backward(x, weight, xh, mean, rstd)

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, *_: Any) -> tuple:
        if dy is None:  # the output was not used
            return None, None, None, None
        x, weight, xh, mean, rstd = ctx.saved_tensors
        dx, dw, db = _InstanceNormGrad.apply(dy, x, weight, xh, mean, rstd)
        return dx, dw, db, None


class InstanceNorm(nn.GroupNorm):
    """Instance norm with a learned scale and shift per channel: ``nn.GroupNorm(C, C)`` (the kit's and
    the reference's instance norm), computed as above. Falls back to ``nn.GroupNorm`` for inputs that
    are not 4-D."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, channels, eps=eps, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or _autocast(x):
            return super().forward(x)
        return _InstanceNormFn.apply(x, self.weight, self.bias, self.eps)[0]


class _Unpool(torch.autograd.Function):
    """The adjoint of 2x2 average pooling: each value spread over its 2x2 block, times 1/4 (``like`` is the
    pooling's input, which the activation before it saves anyway; only its shape is read)."""

    @staticmethod
    def forward(dy: Tensor, like: Tensor) -> Tensor:
        return torch.ops.aten.avg_pool2d_backward(dy, like, [2, 2], [2, 2], [0, 0], False, True, None)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple:
        return _Pool.apply(g), None


def _one_pool_kernel(x: Tensor) -> bool:
    return x.is_cuda  # on a GPU a call costs more than the arithmetic


class _Pool(torch.autograd.Function):
    """2x2 average pooling of an even-sized map: one kernel on CUDA; on the CPU the means of row pairs, then
    of column pairs, which ran about twice as fast there as ``avg_pool2d``."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        if _one_pool_kernel(x):
            return torch.nn.functional.avg_pool2d(x, 2, 2)
        n, c, h, w = x.shape
        rows = x.reshape(n, c, h // 2, 2, w).mean(3)
        return torch.lerp(rows[..., 0::2], rows[..., 1::2], 0.5)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> Tensor:
        return _Unpool.apply(dy, ctx.saved_tensors[0])


class AvgPool2x2(nn.AvgPool2d):
    """``nn.AvgPool2d(2, 2)`` whose derivative (``avg_pool2d_backward``) has, in turn, the pooling as its
    derivative: the same function and gradients, one or a few calls per derivative, where autograd's own
    second derivative of the pooling adds zero-filled and bookkeeping calls. Odd or channels-last maps use
    ``nn.AvgPool2d`` itself."""

    def __init__(self) -> None:
        super().__init__(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2 or not x.is_contiguous() or _autocast(x):
            return super().forward(x)
        return _Pool.apply(x)


class _LinearGrad(torch.autograd.Function):
    """``(dx, dweight, dbias)`` of ``x @ weight.T + bias`` for the upstream gradient ``dy``; its backward
    is the second derivative (bilinear in ``dy`` and ``(x, weight)``)."""

    @staticmethod
    def forward(dy: Tensor, x: Tensor, weight: Tensor) -> Any:
        return dy.mm(weight), dy.t().mm(x), dy.sum(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, a: Tensor, big_a: Tensor, beta: Tensor) -> tuple:
        _refuse_third_order(a, big_a, beta)
        dy, x, weight = ctx.saved_tensors
        grad_dy = torch.addmm(torch.addmm(beta, a, weight.t()), x, big_a.t())
        return grad_dy, dy.mm(big_a), dy.t().mm(a)


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(inputs[0], inputs[1])

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        return _LinearGrad.apply(dy, x, weight)


class Linear(nn.Linear):
    """``nn.Linear`` (with a bias) whose second derivative is written out as above: the ConvNet's
    classifier. Inputs that are not 2-D go through ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or self.bias is None or _autocast(x):
            return super().forward(x)
        return _LinearFn.apply(x, self.weight, self.bias)

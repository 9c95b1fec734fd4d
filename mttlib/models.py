"""The paper's ConvNet, every network by name, and a forward pass on one flat parameter vector.

:func:`make_model` builds the ConvNet family and the evaluation networks of :mod:`mttlib.zoo` by
name; it never reseeds, so seed before it for reproducible weights. :class:`FunctionalModel` runs a
network on a flat vector (an expert trajectory is a list of them), keeping the student's unroll
differentiable.
"""

from __future__ import annotations

import difflib
import math
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from mttlib.layers import Linear
from mttlib.zoo import (ACTIVATIONS, MLP, NORMS, POOLINGS, VGG11, AlexNet, AvgPool2x2, LeNet, ResNet18,
                        activation_layer, conv_size, norm_layer, size_error)

__all__ = ["MODEL_NAMES", "NORMS", "ACTIVATIONS", "POOLINGS", "ConvNet", "make_model", "parameter_count",
           "FunctionalModel"]


class ConvNet(nn.Module):
    """The ConvNet of the dataset-distillation papers.

    ``depth`` blocks of [conv 3x3 (``width`` channels, padding 1) -> norm -> activation ->
    pooling], then a linear classifier on the flattened feature map (``feature_shape``).
    28 px images get padding 3 in the first convolution, so they continue as 32 px images. The
    norm, pooling and classifier are :mod:`mttlib.layers`' (``GroupNorm(C, C)``, ``nn.AvgPool2d(2, 2)`` and
    ``nn.Linear``, as the reference, with their second derivatives written out: fewer operator calls).
    Taught in notebook ``00_setup_and_data``.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128, depth: int = 3,
                 norm: str = "instancenorm", activation: str = "relu", pooling: str = "avgpooling") -> None:
        super().__init__()
        first_padding = 3 if image_size == 28 else 1
        size = conv_size(image_size, 3, first_padding)
        if pooling != "none":
            max_depth = int(math.floor(math.log2(size)))
            if depth > max_depth:
                shallower = f"pass depth={max_depth} (or less), " if max_depth >= 1 else ""
                raise size_error(f"convnet with depth={depth}", image_size,
                                 f"{pooling} halves the feature map {depth} times and a {size} px map survives "
                                 f"at most {max_depth} halvings",
                                 f"To fix it, {shallower}pass pooling='none', or use images of at least "
                                 f"{2 ** depth} px.")
        layers: list[nn.Module] = []
        for d in range(depth):
            layers.append(nn.Conv2d(channels if d == 0 else width, width, 3, padding=first_padding if d == 0 else 1))
            if norm != "none":
                layers.append(norm_layer(norm, width))
            layers.append(activation_layer(activation))
            if pooling != "none":
                layers.append(AvgPool2x2() if pooling == "avgpooling" else nn.MaxPool2d(2, 2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, size, size)
        self.classifier = Linear(width * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.features(x).flatten(1))


def _convnet(channels: int, num_classes: int, image_size: int, **kw: Any) -> nn.Module:
    """The ConvNet whose default depth leaves a map of about 4x4: 28/32 px -> 3, 64 -> 4, 128 -> 5."""
    kw.setdefault("depth", 3 if image_size in (28, 32) else max(1, int(math.floor(math.log2(image_size / 4)))))
    return ConvNet(channels, num_classes, image_size, **kw)


# family -> (builder, the overrides it accepts)
_FAMILIES: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "convnet": (_convnet, ("width", "depth", "norm", "activation", "pooling")),
    "alexnet": (AlexNet, ("width", "norm")),
    "vgg11": (VGG11, ("width", "norm")),
    "resnet18": (ResNet18, ("width", "norm")),
    "resnet18_ap": (partial(ResNet18, avg_pool_downsample=True), ("width", "norm")),
    "lenet": (LeNet, ()),
    "mlp": (MLP, ("width",)),
}

# name -> (family, preset overrides); overrides passed to make_model win over presets
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "convnet": ("convnet", {}),
    **{f"convnetd{d}": ("convnet", {"depth": d}) for d in range(1, 6)},
    **{f"convnetw{w}": ("convnet", {"width": w}) for w in (32, 64, 128, 256)},
    **{f"convnet_{k}": ("convnet", {"norm": n}) for k, n in
       (("bn", "batchnorm"), ("ln", "layernorm"), ("in", "instancenorm"), ("gn", "groupnorm"), ("nn", "none"))},
    **{f"convnet_{k}": ("convnet", {"pooling": p}) for k, p in
       (("mp", "maxpooling"), ("ap", "avgpooling"), ("np", "none"))},
    **{f"convnet_{a}": ("convnet", {"activation": a}) for a in ("sigmoid", "relu", "leakyrelu")},
    "alexnet": ("alexnet", {"norm": "none"}),
    "alexnet_bn": ("alexnet", {"norm": "batchnorm"}),
    "vgg11": ("vgg11", {"norm": "instancenorm"}),
    "vgg11_bn": ("vgg11", {"norm": "batchnorm"}),
    "resnet18": ("resnet18", {"norm": "instancenorm"}),
    "resnet18_bn": ("resnet18", {"norm": "batchnorm"}),
    "resnet18_bn_ap": ("resnet18_ap", {"norm": "batchnorm"}),
    "lenet": ("lenet", {}),
    "mlp": ("mlp", {}),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)

# Lookup ignores case, '_' and '-', so the reference code's spellings (ConvNetD4, ConvNetBN,
# ResNet18BN_AP) work too; ConvNetAS/AR/AL are its activation names.
_LOOKUP: dict[str, str] = {name.replace("_", ""): name for name in MODEL_NAMES}
_LOOKUP.update({"convnetas": "convnet_sigmoid", "convnetar": "convnet_relu", "convnetal": "convnet_leakyrelu"})


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "").replace("-", "")
    if key in _LOOKUP:
        return _LOOKUP[key]
    close = difflib.get_close_matches(name.strip().lower(), MODEL_NAMES, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(MODEL_NAMES)}")


def _positive_int(value: Any, what: str, example: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer{example}, got {value!r}")
    return value


def _choice(value: Any, what: str) -> str:
    options = {"norm": NORMS, "activation": ACTIVATIONS, "pooling": POOLINGS}[what]
    key = str(value).strip().lower()
    if key not in options:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(options)}")
    return key


def make_model(name: str, channels: int, num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
    """A freshly initialised network by name (:data:`MODEL_NAMES`, any case, or the reference code's
    spellings such as ``ResNet18BN_AP``), mapping ``[N, channels, size, size]`` to logits.

    ``overrides`` win over what the name implies (``None``: the default): ``width``, ``depth``,
    ``norm``, ``activation`` and ``pooling`` for the ConvNet family; ``width`` and ``norm`` for
    AlexNet, VGG11 and the ResNets; ``width`` for the MLP. Weights come from the global generator:
    seed before calling. Taught in notebook ``00_setup_and_data``.
    """
    canonical = _canonical(name)
    family, preset = _REGISTRY[canonical]
    builder, allowed = _FAMILIES[family]
    channels = _positive_int(channels, "channels")
    num_classes = _positive_int(num_classes, "num_classes")
    image_size = _positive_int(image_size, "image_size",
                               " (the side of a square image in pixels, e.g. 28, 32, 64 or 128)")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        accepts = f"accepts only {', '.join(allowed)}" if allowed else "accepts no overrides"
        raise ValueError(f"{canonical} {accepts}; got {', '.join(unknown)}")
    settings = {**preset, **given}
    for key, value in settings.items():
        settings[key] = _positive_int(value, key) if key in ("width", "depth") else _choice(value, key)
    return builder(channels, num_classes, image_size, **settings)


def parameter_count(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``. Taught in notebook ``00_setup_and_data``."""
    return sum(p.numel() for p in model.parameters())


class FunctionalModel:
    """Run a module on one flat parameter vector (``model.parameters()`` order), differentiably.

    ``fm(flat, x)`` splits ``flat`` into views (no copies) and runs the module's own forward on them
    (``torch.func.functional_call``), so the logits are differentiable in ``flat`` and ``x``. Buffers
    (BatchNorm running statistics) stay the module's. Taught in notebook ``00_setup_and_data``.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"FunctionalModel wraps an nn.Module, got {type(model).__name__}")
        named = list(model.named_parameters())
        if not named:
            raise ValueError(f"{type(model).__name__} has no parameters to flatten")
        self.module = model
        self.names: tuple[str, ...] = tuple(n for n, _ in named)
        self.shapes: tuple[torch.Size, ...] = tuple(p.shape for _, p in named)
        self.numels: tuple[int, ...] = tuple(p.numel() for _, p in named)
        self.numel: int = sum(self.numels)
        # tied weights need functional_call's alias handling; without them we skip its cost
        self._tied = len(list(model.named_parameters(remove_duplicate=False))) != len(named)

    def __repr__(self) -> str:
        return f"FunctionalModel({type(self.module).__name__}, numel={self.numel:,}, tensors={len(self.names)})"

    def _check(self, flat: Tensor, action: str) -> None:
        if not isinstance(flat, Tensor):
            raise TypeError(f"{action} expects a 1-D tensor of parameters, got {type(flat).__name__}")
        if flat.dim() != 1 or flat.shape[0] != self.numel:
            given = f"{flat.numel():,} entries" if flat.dim() == 1 else f"shape {tuple(flat.shape)}"
            raise ValueError(
                f"{action}: {type(self.module).__name__} expects a 1-D parameter vector of {self.numel:,} "
                f"entries, got {given}. This usually means the parameters (for example an expert trajectory) "
                f"were saved from a different model: build the model with the same name, channels, "
                f"num_classes, image_size and overrides as the one that produced them.")

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into ``{parameter name: view shaped like the parameter}``."""
        self._check(flat, "unflatten")
        chunks = torch.split(flat, list(self.numels))
        return {name: chunk.view(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes)}

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        """Logits of the module on ``x`` with its parameters taken from ``flat``."""
        return functional_call(self.module, self.unflatten(flat), (x,), tie_weights=self._tied)

    def flatten(self) -> Tensor:
        """A detached 1-D copy of the module's parameters, in ``model.parameters()`` order."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    @torch.no_grad()
    def load_(self, flat: Tensor) -> None:
        """Copy ``flat`` into the module's parameters in place (device and dtype converted)."""
        self._check(flat, "load_")
        for param, chunk in zip(self.module.parameters(), torch.split(flat.detach(), list(self.numels))):
            param.copy_(chunk.view(param.shape))

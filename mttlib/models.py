"""The networks of the MTT paper, and a way to run any of them on one flat parameter vector.

:func:`make_model` builds the small-image network zoo used throughout the dataset-distillation
literature: the ConvNet family (the paper's workhorse: ``depth`` blocks of
conv 3x3 -> instance norm -> ReLU -> 2x2 average pooling, then one linear layer), AlexNet,
VGG11, ResNet18 (three variants), LeNet and an MLP. Every model takes 1- or 3-channel images of
28, 32, 64 or 128 pixels (other sizes work where the shapes allow) and any number of classes.

:class:`FunctionalModel` is what trajectory matching needs: an expert trajectory is a list of
flat parameter vectors, and a student network is trained by taking SGD steps on such a vector
*functionally*, so that the whole unroll stays differentiable. ``fm(flat, x)`` runs the module's
own forward with its parameters replaced by views into ``flat``.

Construction never touches the random seed: seed with ``torch.manual_seed`` before calling
:func:`make_model` to get the same initial weights every time.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "MODEL_NAMES",
    "NORMS",
    "ACTIVATIONS",
    "POOLINGS",
    "make_model",
    "parameter_count",
    "FunctionalModel",
    "ConvNet",
    "AlexNet",
    "VGG11",
    "ResNet18",
    "LeNet",
    "MLP",
]

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpooling", "maxpooling", "none")

# The ConvNet depth that leaves a 4x4 feature map, as in the paper's experiments.
_DEFAULT_DEPTH = {28: 3, 32: 3, 64: 4, 128: 5}


# --------------------------------------------------------------------------- building blocks


def _norm_layer(norm: str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` feature maps (``Identity`` for 'none')."""
    if norm == "instancenorm":
        # One group per channel: instance norm with a learnable per-channel affine.
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "groupnorm":
        if channels % 4:
            raise ValueError(
                f"norm='groupnorm' uses 4 groups, so the number of channels must be a multiple "
                f"of 4; got {channels}. Choose a width divisible by 4."
            )
        return nn.GroupNorm(4, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def _conv_size(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _size_error(model: str, image_size: int, detail: str, advice: str) -> ValueError:
    return ValueError(f"{model} cannot take {image_size} px images: {detail}. {advice}")


# --------------------------------------------------------------------------- ConvNet


class ConvNet(nn.Module):
    """The ConvNet of the dataset-distillation papers.

    ``depth`` blocks of [Conv2d 3x3 (``width`` channels, padding 1) -> norm -> activation ->
    pooling], then a linear classifier on the flattened feature map. 28 px images get padding 3
    in the first convolution, so they continue as 32 px images (the MNIST convention).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        activation: str = "relu",
        pooling: str = "avgpooling",
    ) -> None:
        super().__init__()
        first_padding = 3 if image_size == 28 else 1
        size = _conv_size(image_size, 3, first_padding)
        if pooling != "none":
            max_depth = int(math.floor(math.log2(size))) if size >= 1 else 0
            if depth > max_depth:
                shallower = f"pass depth={max_depth} (or less), " if max_depth >= 1 else ""
                raise _size_error(
                    f"convnet with depth={depth}",
                    image_size,
                    f"{pooling} halves the feature map {depth} times and a {size} px map "
                    f"survives at most {max_depth} halvings",
                    f"To fix it, {shallower}pass pooling='none', or use images of at least "
                    f"{2 ** depth} px.",
                )
        layers: list[nn.Module] = []
        in_channels = channels
        for d in range(depth):
            padding = first_padding if d == 0 else 1
            layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=padding))
            if norm != "none":
                layers.append(_norm_layer(norm, width))
            layers.append(_activation(activation))
            if pooling == "avgpooling":
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
                size //= 2
            elif pooling == "maxpooling":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, size, size)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.features(x).flatten(1))


# --------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """The small AlexNet of the dataset-condensation code (five convolutions, three max-pools).

    Channels ``width, 1.5 width, 2 width, 1.5 width, 1.5 width`` (128, 192, 256, 192, 192 by
    default); ``norm`` sits after every convolution ('none' for ``alexnet``, 'batchnorm' for
    ``alexnet_bn``). 28 px images get padding 4 in the first convolution, so they continue
    as 32 px.
    """

    def __init__(
        self, channels: int, num_classes: int, image_size: int, width: int = 128, norm: str = "none"
    ) -> None:
        super().__init__()
        first_padding = 4 if image_size == 28 else 2
        size = _conv_size(image_size, 5, first_padding) // 2 // 2 // 2
        if size < 1:
            raise _size_error(
                "alexnet", image_size, "its three 2x2 max-pools need at least 8 px", "Use larger images."
            )
        c1, c2, c3, c4, c5 = width, width * 3 // 2, width * 2, width * 3 // 2, width * 3 // 2

        def block(cin: int, cout: int, kernel: int, padding: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, padding=padding), _norm_layer(norm, cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(channels, c1, 5, first_padding),
            nn.MaxPool2d(2, 2),
            *block(c1, c2, 5, 2),
            nn.MaxPool2d(2, 2),
            *block(c2, c3, 3, 1),
            *block(c3, c4, 3, 1),
            *block(c4, c5, 3, 1),
            nn.MaxPool2d(2, 2),
        )
        self.feature_shape = (c5, size, size)
        self.classifier = nn.Linear(c5 * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.features(x).flatten(1))


# --------------------------------------------------------------------------- VGG11


class VGG11(nn.Module):
    """VGG11 for small images: eight 3x3 convolutions with norm and ReLU, five max-pools, one
    linear layer. Channels ``w, 2w, 4w, 4w, 8w, 8w, 8w, 8w`` with ``w = width`` (64 by default).

    Instance norm (``GroupNorm(C, C)``) by default; ``vgg11_bn`` uses BatchNorm. 28 px images get
    padding 3 in the first convolution, so they continue as 32 px.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 64,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        first_padding = 3 if image_size == 28 else 1
        size = _conv_size(image_size, 3, first_padding) // 2**5
        if size < 1:
            raise _size_error(
                "vgg11", image_size, "its five 2x2 max-pools need at least 32 px", "Use larger images."
            )
        w = width
        plan: list[int | str] = [w, "M", 2 * w, "M", 4 * w, 4 * w, "M", 8 * w, 8 * w, "M", 8 * w, 8 * w, "M"]
        layers: list[nn.Module] = []
        in_channels = channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            padding = first_padding if not layers else 1
            layers += [
                nn.Conv2d(in_channels, int(item), kernel_size=3, padding=padding),
                _norm_layer(norm, int(item)),
                nn.ReLU(),
            ]
            in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.feature_shape = (8 * w, size, size)
        self.classifier = nn.Linear(8 * w * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.features(x).flatten(1))


# --------------------------------------------------------------------------- ResNet18


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with norm and a residual connection.

    With ``avg_pool_downsample`` a stride-2 block keeps its convolutions at stride 1 and halves
    the map with 2x2 average pooling instead (the ``_AP`` variant of the reference code).
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int, norm: str, avg_pool_downsample: bool = False
    ) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2) if (avg_pool_downsample and stride != 1) else nn.Identity()
        conv_stride = 1 if avg_pool_downsample else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm_layer(norm, planes)
        if stride != 1 or in_planes != planes:
            if avg_pool_downsample:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=1, bias=False),
                    nn.AvgPool2d(2, 2) if stride != 1 else nn.Identity(),
                    _norm_layer(norm, planes),
                )
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), _norm_layer(norm, planes)
                )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.pool(torch.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for small images: a 3x3 stride-1 stem, four stages of two basic blocks with
    ``w, 2w, 4w, 8w`` channels (``w = width``, 64 by default), then a linear classifier.

    The default pools the last map to 1x1 (global average). With ``avg_pool_downsample`` (the
    ``resnet18_bn_ap`` variant) stages halve the map by average pooling instead of strided
    convolutions and the classifier reads the whole flattened map (4x4 at 32 px).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 64,
        norm: str = "instancenorm",
        avg_pool_downsample: bool = False,
    ) -> None:
        super().__init__()
        if avg_pool_downsample:
            size = image_size // 2 // 2 // 2
            if size < 1:
                raise _size_error(
                    "resnet18_bn_ap",
                    image_size,
                    "its three 2x2 average-pooling stages need at least 8 px",
                    "Use larger images.",
                )
        self.avg_pool_downsample = avg_pool_downsample
        self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm_layer(norm, width)
        stages = []
        in_planes = width
        for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(in_planes, planes, stride, norm, avg_pool_downsample),
                    BasicBlock(planes, planes, 1, norm, avg_pool_downsample),
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        if avg_pool_downsample:
            self.head = nn.Identity()
            self.feature_shape = (8 * width, size, size)
        else:
            self.head = nn.AdaptiveAvgPool2d(1)
            self.feature_shape = (8 * width, 1, 1)
        c, h, w = self.feature_shape
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.classifier(self.head(out).flatten(1))


# --------------------------------------------------------------------------- LeNet, MLP


class LeNet(nn.Module):
    """LeNet-5 with ReLU: conv 6@5x5, max-pool, conv 16@5x5, max-pool, fc 120, fc 84, fc classes.

    28 px images get padding 2 in the first convolution (the MNIST convention).
    """

    def __init__(self, channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        padding = 2 if image_size == 28 else 0
        size = (_conv_size(_conv_size(image_size, 5, padding) // 2, 5, 0)) // 2
        if size < 1:
            raise _size_error(
                "lenet",
                image_size,
                "its two 5x5 convolutions and two 2x2 max-pools need at least 16 px",
                "Use larger images.",
            )
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.feature_shape = (16, size, size)
        self.fc_1 = nn.Linear(16 * size * size, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = self.features(x).flatten(1)
        out = torch.relu(self.fc_1(out))
        out = torch.relu(self.fc_2(out))
        return self.fc_3(out)


class MLP(nn.Module):
    """Flatten, then two hidden layers of ``width`` (128) units with ReLU, then the classifier."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(channels * image_size * image_size, width)
        self.fc_2 = nn.Linear(width, width)
        self.fc_3 = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = torch.relu(self.fc_1(x.flatten(1)))
        out = torch.relu(self.fc_2(out))
        return self.fc_3(out)


# --------------------------------------------------------------------------- the registry


def _build_convnet(channels: int, num_classes: int, image_size: int, **kw: Any) -> nn.Module:
    if "depth" not in kw:
        kw["depth"] = _default_depth(image_size)
    return ConvNet(channels, num_classes, image_size, **kw)


def _default_depth(image_size: int) -> int:
    """ConvNet depth by image size: 28/32 -> 3, 64 -> 4, 128 -> 5; otherwise the depth that
    leaves a feature map of about 4x4 (at least 1)."""
    if image_size in _DEFAULT_DEPTH:
        return _DEFAULT_DEPTH[image_size]
    return max(1, int(math.floor(math.log2(max(image_size, 1) / 4))))


def _build_resnet18_ap(channels: int, num_classes: int, image_size: int, **kw: Any) -> nn.Module:
    return ResNet18(channels, num_classes, image_size, avg_pool_downsample=True, **kw)


# family -> (builder, the overrides it accepts)
_FAMILIES: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "convnet": (_build_convnet, ("width", "depth", "norm", "activation", "pooling")),
    "alexnet": (AlexNet, ("width", "norm")),
    "vgg11": (VGG11, ("width", "norm")),
    "resnet18": (ResNet18, ("width", "norm")),
    "resnet18_ap": (_build_resnet18_ap, ("width", "norm")),
    "lenet": (LeNet, ()),
    "mlp": (MLP, ("width",)),
}

# name -> (family, preset overrides). Explicit overrides passed to make_model win over presets.
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "convnet": ("convnet", {}),
    **{f"convnetd{d}": ("convnet", {"depth": d}) for d in range(1, 6)},
    **{f"convnetw{w}": ("convnet", {"width": w}) for w in (32, 64, 128, 256)},
    "convnet_bn": ("convnet", {"norm": "batchnorm"}),
    "convnet_ln": ("convnet", {"norm": "layernorm"}),
    "convnet_in": ("convnet", {"norm": "instancenorm"}),
    "convnet_gn": ("convnet", {"norm": "groupnorm"}),
    "convnet_nn": ("convnet", {"norm": "none"}),
    "convnet_mp": ("convnet", {"pooling": "maxpooling"}),
    "convnet_ap": ("convnet", {"pooling": "avgpooling"}),
    "convnet_np": ("convnet", {"pooling": "none"}),
    "convnet_sigmoid": ("convnet", {"activation": "sigmoid"}),
    "convnet_relu": ("convnet", {"activation": "relu"}),
    "convnet_leakyrelu": ("convnet", {"activation": "leakyrelu"}),
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
# AlexNetBN, VGG11BN, ResNet18BN_AP) work too; ConvNetAS/AR/AL are its activation names.
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


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _choice(value: Any, what: str, options: tuple[str, ...]) -> str:
    key = str(value).strip().lower()
    if key not in options:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(options)}")
    return key


def make_model(name: str, channels: int, num_classes: int, image_size: int, **overrides: Any) -> nn.Module:
    """Build a freshly initialised network from the MTT model zoo.

    Args:
        name: one of :data:`MODEL_NAMES` (case-insensitive; the reference code's spellings such
            as ``ConvNetD4`` or ``ResNet18BN_AP`` work too).
        channels: image channels (1 or 3).
        num_classes: number of output logits.
        image_size: side of the square input images in pixels (28, 32, 64, 128; other sizes
            where the architecture's shapes allow).
        **overrides: ``width``, ``depth``, ``norm`` ('instancenorm', 'batchnorm', 'layernorm',
            'groupnorm', 'none'), ``activation`` ('relu', 'sigmoid', 'leakyrelu'), ``pooling``
            ('avgpooling', 'maxpooling', 'none') for the ConvNet family; ``width`` and ``norm``
            for AlexNet, VGG11 and the ResNets; ``width`` for the MLP. They win over the
            settings a name implies; ``None`` means "use the default".

    Returns:
        An ``nn.Module`` in training mode mapping ``[N, channels, image_size, image_size]`` to
        logits ``[N, num_classes]``. Weights use PyTorch's default initialisation and the
        global random generator: seed before calling for reproducible weights.

    Raises:
        ValueError: unknown name or override, or an image size the architecture cannot take.
    """
    canonical = _canonical(name)
    family, preset = _REGISTRY[canonical]
    builder, allowed = _FAMILIES[family]
    channels = _positive_int(channels, "channels")
    num_classes = _positive_int(num_classes, "num_classes")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(
            f"image_size must be a positive integer (the side of a square image in pixels, "
            f"e.g. 28, 32, 64 or 128), got {image_size!r}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        accepts = f"accepts only {', '.join(allowed)}" if allowed else "accepts no overrides"
        raise ValueError(f"{canonical} {accepts}; got {', '.join(unknown)}")
    settings = {**preset, **given}
    if "width" in settings:
        settings["width"] = _positive_int(settings["width"], "width")
    if "depth" in settings:
        settings["depth"] = _positive_int(settings["depth"], "depth")
    if "norm" in settings:
        settings["norm"] = _choice(settings["norm"], "norm", NORMS)
    if "activation" in settings:
        settings["activation"] = _choice(settings["activation"], "activation", ACTIVATIONS)
    if "pooling" in settings:
        settings["pooling"] = _choice(settings["pooling"], "pooling", POOLINGS)
    return builder(channels, num_classes, image_size, **settings)


def parameter_count(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- functional forward


class FunctionalModel:
    """Run a module on one flat parameter vector, differentiably.

    ``fm = FunctionalModel(model)`` records the parameter names, shapes and sizes once (in
    ``model.parameters()`` order). ``fm(flat, x)`` splits ``flat`` into views (no copies) and
    calls the module's own forward with them via ``torch.func.functional_call``, so the logits
    are differentiable with respect to both ``flat`` and ``x``. Buffers (BatchNorm running
    statistics) are not part of ``flat``: they stay the module's, and a forward in training
    mode updates them as usual.
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
        self._split_sizes = list(self.numels)
        # Tied weights need functional_call's alias handling; without them we skip its cost.
        self._tied = len(list(model.named_parameters(remove_duplicate=False))) != len(named)

    def __repr__(self) -> str:
        return (
            f"FunctionalModel({type(self.module).__name__}, numel={self.numel:,}, "
            f"tensors={len(self.names)})"
        )

    def _check(self, flat: Tensor, action: str) -> None:
        if not isinstance(flat, Tensor):
            raise TypeError(f"{action} expects a 1-D tensor of parameters, got {type(flat).__name__}")
        if flat.dim() != 1 or flat.shape[0] != self.numel:
            given = f"{flat.numel():,} entries" if flat.dim() == 1 else f"shape {tuple(flat.shape)}"
            raise ValueError(
                f"{action}: {type(self.module).__name__} expects a 1-D parameter vector of "
                f"{self.numel:,} entries, got {given}. This usually means the parameters (for "
                f"example an expert trajectory) were saved from a different model: build the "
                f"model with the same name, channels, num_classes, image_size and overrides "
                f"as the one that produced them."
            )

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into ``{parameter name: view shaped like the parameter}``."""
        self._check(flat, "unflatten")
        chunks = torch.split(flat, self._split_sizes)
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
        chunks = torch.split(flat.detach(), self._split_sizes)
        for param, chunk in zip(self.module.parameters(), chunks):
            param.copy_(chunk.view(param.shape))

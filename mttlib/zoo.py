"""The cross-architecture evaluation networks, sized for small images, and the layer choices they share.

AlexNet, VGG11, ResNet18 (three variants), LeNet and an MLP; build them by name with
:func:`mttlib.models.make_model`. Module names and their order fix the parameter order of a flat
vector (expert trajectories store such vectors), so they must not change.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mttlib.layers import AvgPool2x2, InstanceNorm

__all__ = ["NORMS", "ACTIVATIONS", "POOLINGS", "norm_layer", "activation_layer", "AvgPool2x2", "conv_size",
           "size_error", "AlexNet", "VGG11", "BasicBlock", "ResNet18", "LeNet", "MLP"]

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpooling", "maxpooling", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The norm (one of :data:`NORMS`) over ``channels`` maps; instance norm is ``GroupNorm(C, C)``
    (:class:`mttlib.layers.InstanceNorm`, the same layer with cheaper second derivatives)."""
    if norm == "groupnorm" and channels % 4:
        raise ValueError(f"norm='groupnorm' uses 4 groups, so the number of channels must be a multiple "
                         f"of 4; got {channels}. Choose a width divisible by 4.")
    if norm == "instancenorm":
        return InstanceNorm(channels)
    groups = {"layernorm": 1, "groupnorm": 4}
    if norm in groups:
        return nn.GroupNorm(groups[norm], channels, affine=True)
    return {"batchnorm": nn.BatchNorm2d, "none": nn.Identity}[norm](channels)


def activation_layer(name: str) -> nn.Module:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`; leaky ReLU has slope 0.01)."""
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU}[name]()


def conv_size(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    """Side of a convolution's output map for a ``size`` px input."""
    return (size + 2 * padding - kernel) // stride + 1


def size_error(model: str, image_size: int, detail: str, advice: str = "Use larger images.") -> ValueError:
    """The error for an image size a network cannot take, saying why and what to do."""
    return ValueError(f"{model} cannot take {image_size} px images: {detail}. {advice}")


class _Classifier(nn.Module):
    """``features`` then one linear layer on the flattened map (AlexNet and VGG11)."""

    features: nn.Module
    classifier: nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.features(x).flatten(1))


class AlexNet(_Classifier):
    """The small AlexNet of the dataset-condensation code: five convolutions with ``norm`` and ReLU (channels
    ``w, 1.5w, 2w, 1.5w, 1.5w``, ``w = width``), three max-pools; 28 px images continue as 32 px."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128,
                 norm: str = "none") -> None:
        super().__init__()
        first_padding = 4 if image_size == 28 else 2
        size = conv_size(image_size, 5, first_padding) // 8
        if size < 1:
            raise size_error("alexnet", image_size, "its three 2x2 max-pools need at least 8 px")
        c1, c2, c3, c4, c5 = width, width * 3 // 2, width * 2, width * 3 // 2, width * 3 // 2

        def block(cin: int, cout: int, kernel: int, padding: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, padding=padding), norm_layer(norm, cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(channels, c1, 5, first_padding), nn.MaxPool2d(2, 2),
            *block(c1, c2, 5, 2), nn.MaxPool2d(2, 2),
            *block(c2, c3, 3, 1), *block(c3, c4, 3, 1), *block(c4, c5, 3, 1), nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Linear(c5 * size * size, num_classes)


class VGG11(_Classifier):
    """VGG11 for small images: eight 3x3 convolutions with norm and ReLU, five max-pools, one linear
    layer. Channels ``w, 2w, 4w, 4w, 8w, 8w, 8w, 8w`` (``w = width``); 28 px images continue as 32 px."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 64,
                 norm: str = "instancenorm") -> None:
        super().__init__()
        first_padding = 3 if image_size == 28 else 1
        size = conv_size(image_size, 3, first_padding) // 2**5
        if size < 1:
            raise size_error("vgg11", image_size, "its five 2x2 max-pools need at least 32 px")
        w, cin = width, channels
        layers: list[nn.Module] = []
        for stage in ((w,), (2 * w,), (4 * w, 4 * w), (8 * w, 8 * w), (8 * w, 8 * w)):
            for cout in stage:
                layers += [nn.Conv2d(cin, cout, 3, padding=1 if layers else first_padding), norm_layer(norm, cout),
                           nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(8 * w * size * size, num_classes)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with norm, plus a residual connection; with ``avg_pool_downsample`` (the reference
    code's ``_AP``) a stride-2 block convolves at stride 1 and halves the map by 2x2 average pooling."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avg_pool_downsample: bool = False) -> None:
        super().__init__()
        conv_stride = 1 if avg_pool_downsample else stride
        halve = avg_pool_downsample and stride != 1
        self.pool = nn.AvgPool2d(2, 2) if halve else nn.Identity()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:  # the _AP shortcut pools between its conv and norm
            pool = [nn.AvgPool2d(2, 2) if halve else nn.Identity()] if avg_pool_downsample else []
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=conv_stride, bias=False), *pool,
                                          norm_layer(norm, planes))

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.pool(torch.relu(self.bn1(self.conv1(x))))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for small images: a 3x3 stride-1 stem, four stages of two basic blocks with ``w, 2w, 4w, 8w``
    channels (``w = width``), the last map pooled to 1x1, a linear classifier. With ``avg_pool_downsample``
    (``resnet18_bn_ap``) stages halve the map by average pooling and the classifier reads the whole map."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 64,
                 norm: str = "instancenorm", avg_pool_downsample: bool = False) -> None:
        super().__init__()
        size = image_size // 8 if avg_pool_downsample else 1
        if size < 1:
            raise size_error("resnet18_bn_ap", image_size, "its three 2x2 average-pooling stages need at least 8 px")
        self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(norm, width)
        planes = (width, width, 2 * width, 4 * width, 8 * width)  # the stem's, then each stage's
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            nn.Sequential(BasicBlock(planes[i], planes[i + 1], 1 if i == 0 else 2, norm, avg_pool_downsample),
                          BasicBlock(planes[i + 1], planes[i + 1], 1, norm, avg_pool_downsample)) for i in range(4))
        self.head = nn.Identity() if avg_pool_downsample else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * width * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.classifier(self.head(out).flatten(1))


class LeNet(nn.Module):
    """LeNet-5 with ReLU: conv 6@5x5, max-pool, conv 16@5x5, max-pool, fc 120, fc 84, fc classes.

    28 px images get padding 2 in the first convolution (the MNIST convention).
    """

    def __init__(self, channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        padding = 2 if image_size == 28 else 0
        size = conv_size(conv_size(image_size, 5, padding) // 2, 5, 0) // 2
        if size < 1:
            raise size_error("lenet", image_size, "its two 5x5 convolutions and two 2x2 max-pools need at least 16 px")
        self.features = nn.Sequential(nn.Conv2d(channels, 6, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2, 2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.fc_1 = nn.Linear(16 * size * size, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = torch.relu(self.fc_1(self.features(x).flatten(1)))
        return self.fc_3(torch.relu(self.fc_2(out)))


class MLP(nn.Module):
    """Flatten, then two hidden layers of ``width`` units with ReLU, then the classifier."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(channels * image_size * image_size, width)
        self.fc_2 = nn.Linear(width, width)
        self.fc_3 = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        out = torch.relu(self.fc_1(x.flatten(1)))
        return self.fc_3(torch.relu(self.fc_2(out)))

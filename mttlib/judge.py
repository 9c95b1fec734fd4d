"""A judge for textures: a network trained on the real images alone, independent of the experts.

Whether a distilled texture *shows* its class is asked of a network that took no part in making it.
The experts cannot judge fairly: the canvases were shaped to move their parameters, and at classroom
size they are weak (ten epochs of plain SGD). The judge is a wider ConvNet trained on every real
training image as networks are in an evaluation (SGD momentum 0.9, weight decay 5e-4, lr ×0.1 at
half-time, DSA; here lr 0.02, batches of 128, 12 epochs: about 60 % on cifar10-mini's test photos),
from its own seed. It is trained once and kept in a cache file (:func:`mttlib.io.cached`) keyed by
the data and the recipe; the kit ships the judge of its embedded ``cifar10-mini`` under the default
recipe in ``data/judges`` (``shipped=False`` trains it again, about two minutes on two CPU cores).
:func:`mttlib.texture.crop_recognition` asks it about random toroidal crops. Taught in notebook
``04_tileable_textures``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mttlib.augment import DSA
from mttlib.data import ImageData
from mttlib.io import KIT_ROOT, cached
from mttlib.models import make_model
from mttlib.train import accuracy, can_compile, derive_seed, pick_device, seeded, train

__all__ = ["JudgeConfig", "Judge", "train_judge", "SHIPPED_DIR"]

SHIPPED_DIR = KIT_ROOT / "data" / "judges"  # judges that ship with the kit, named as the cache names them


@dataclass
class JudgeConfig:
    """How the judge is trained: the network, epochs, learning rate, batch size and seed."""

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 64})
    epochs: int = 12
    lr: float = 0.02
    batch_size: int = 128
    seed: int = 0
    compile: bool = True  # where a compiler exists (mttlib.train.can_compile); the same training up to rounding

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")


class Judge:
    """A trained network: call it on preprocessed images ``[M, C, h, w]`` for class probabilities ``[M, K]``."""

    def __init__(self, net: torch.nn.Module, test_acc: float, config: JudgeConfig, seconds: float) -> None:
        self.net, self.test_acc, self.config, self.seconds = net.eval(), float(test_acc), config, float(seconds)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        return self.net(x.to(next(self.net.parameters()).device)).softmax(1).cpu()  # handed back on the CPU

    def __repr__(self) -> str:
        return f"Judge({self.config.model} {self.config.model_kwargs}, test accuracy {100 * self.test_acc:.1f} %)"


def _build(data: ImageData, config: JudgeConfig, device: torch.device) -> torch.nn.Module:
    with seeded(derive_seed("mttlib.judge", config.seed), torch.device("cpu")):
        net = make_model(config.model, data.channels, data.num_classes, data.image_size, **config.model_kwargs)
    return net.to(device)


def train_judge(data: ImageData, config: JudgeConfig | None = None, *, cache: str | Path | None = None,
                device: str | torch.device | None = "auto", shipped: bool = True) -> Judge:
    """The judge of ``data``: trained on its whole training split, tested on its test split; kept in ``cache``
    (a folder; None trains every time). With ``shipped``, a judge of the same data and recipe in
    :data:`SHIPPED_DIR` is loaded instead of training one. Taught in notebook ``04_tileable_textures``."""
    config, device = config or JudgeConfig(), pick_device(device)
    key = json.dumps(["judge-v1", data.describe(), {**asdict(config), "compile": None}], sort_keys=True)

    def make() -> dict[str, Any]:
        began, net = time.perf_counter(), _build(data, config, device)
        x, y = data.train_tensors(device)
        generator = torch.Generator().manual_seed(derive_seed("mttlib.judge.batches", config.seed))
        train(net, x, y, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, momentum=0.9,
              weight_decay=5e-4, lr_decay=True, dsa=DSA(data.dsa_strategy), shuffle=generator,
              compile=config.compile and can_compile(device))
        test_acc = accuracy(net, *data.test_tensors(device))[0]
        return {"state": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "test_acc": test_acc,
                "seconds": time.perf_counter() - began}

    content = cached(cache, f"judge-{data.name}-{config.model}", hashlib.sha256(key.encode()).hexdigest()[:16], make,
                     shipped=SHIPPED_DIR if shipped else None)
    net = _build(data, config, device)
    net.load_state_dict(content["state"])
    return Judge(net, content["test_acc"], config, content["seconds"])

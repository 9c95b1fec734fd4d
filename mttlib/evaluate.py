"""Evaluate a (small) training set: train fresh networks on it, report test accuracy.

This is how every number of the MTT paper is made, and how a distilled set is judged: train
``K`` freshly initialised networks on the set alone and report the mean ± standard deviation of
their test accuracy. The recipe is the paper's evaluation code:

* SGD, momentum 0.9, weight decay 5e-4, cross-entropy, mini-batches of 256 (a set of 10 or 100
  images is one batch per epoch);
* the learning rate is the one given -- for a distilled set, the ``syn_lr`` learned together
  with the images; 0.01 for real images -- and drops ×0.1 at half-time: epochs
  ``0 .. epochs//2 - 1`` use ``lr``, the rest ``lr / 10``. As in the paper's code the optimiser is
  restarted at the drop, so the momentum buffers start again from zero;
* DSA augmentation (:class:`mttlib.augment.DSA` with the dataset's strategy: no flip for digits)
  on every training batch; none at test time;
* the paper trains 1000 epochs; any number is accepted. (The paper's code runs ``epochs + 1``
  epochs and drops the lr one epoch after half-time; the difference is immaterial.)

Each network ``k`` of an evaluation gets its own seed, :func:`run_seed` ``(seed, k)``, which fixes
its initial weights, its batch order and its augmentations, so an evaluation is reproducible on
a given machine.

Baselines use the identical recipe: :func:`evaluate_random_real` (``ipc`` random real training
images per class), :func:`evaluate_full_data` (the whole training split) and
:func:`evaluate_cross_architecture` (one set, several architectures).

To choose among distillation checkpoints without looking at the test set, hold out a
validation split with :func:`split_validation` and evaluate with ``eval_on=val_part``.

Accuracies are fractions in [0, 1]; ``str(result)`` shows percent. The standard deviation is
the population one (``numpy.std``), as the paper reports.

Soft labels (float ``[N, num_classes]`` class probabilities, e.g. TESLA's or DATM's, see
:mod:`mttlib.followups`) train with soft cross-entropy. Such a result is marked
(``result.labels == "soft"``, and its text says so): the networks learn partly from an expert's
outputs -- knowledge distillation -- so the number is not comparable with hard-label accuracy.
:func:`evaluate_soft_and_hard` evaluates the same images both ways, to report them side by side.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mttlib.augment import DSA
from mttlib.io import safe_load
from mttlib import texture
from mttlib.models import make_model
from mttlib.zca import check_recipe

if TYPE_CHECKING:  # imported lazily at run time: the data module pulls in torchvision
    from mttlib.data import ImageData

__all__ = [
    "RunResult",
    "EvalResult",
    "run_seed",
    "make_run_model",
    "train_and_test",
    "evaluate_set",
    "evaluate_soft_and_hard",
    "SOFT_LABEL_NOTE",
    "random_real_subset",
    "evaluate_random_real",
    "evaluate_full_data",
    "evaluate_cross_architecture",
    "split_validation",
    "evaluate_textures",
    "load_released", "released_space", "REFERENCE_NORMALISATION",

    "PAPER_EPOCHS",
    "DEFAULT_MODELS",
]

PAPER_EPOCHS = 1000
SOFT_LABEL_NOTE = ("trained with soft labels: mixes in knowledge distillation from the experts, "
                   "not comparable with hard-label accuracy")
DEFAULT_MODELS = ("convnet", "alexnet", "vgg11", "resnet18")

# what `eval_on` accepts: a split name of `data`, another ImageData (its test split), or tensors
EvalOn = Union[str, "ImageData", tuple]

_PRETTY = {"convnet": "ConvNet", "alexnet": "AlexNet", "vgg11": "VGG11", "resnet18": "ResNet18",
           "lenet": "LeNet", "mlp": "MLP", "alexnet_bn": "AlexNet-BN", "vgg11_bn": "VGG11-BN",
           "resnet18_bn": "ResNet18-BN", "convnet_bn": "ConvNet-BN"}


def _pretty(model: str) -> str:
    return _PRETTY.get(model.lower(), model)


# --------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """One network trained on a set and tested.

    ``test_acc`` is measured on the evaluation split (``eval_on``) without augmentation;
    ``train_acc`` and ``train_loss`` are the averages over the last epoch's (augmented) training
    batches. ``loss_curve`` / ``lr_curve`` hold one value per epoch: the mean training loss and
    the learning rate the optimiser actually used. ``diverged`` is True when the loss became
    non-finite (training stopped there; usually the learning rate is too large).
    """

    test_acc: float
    train_acc: float
    train_loss: float
    seed: int
    model: str
    epochs: int
    loss_curve: list[float] = field(default_factory=list)
    lr_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return dataclasses.asdict(self)


@dataclass
class EvalResult:
    """Test accuracy of ``K`` networks trained on one set: mean, std and every run."""

    mean: float
    std: float
    accuracies: list[float]
    config: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list, repr=False)

    @property
    def labels(self) -> str:
        """``"hard"`` (class indices) or ``"soft"`` (class probabilities: see :data:`SOFT_LABEL_NOTE`)."""
        return str(self.config.get("labels", "hard"))

    def __str__(self) -> str:
        k, epochs = len(self.accuracies), self.config.get("epochs", "?")
        model = _pretty(str(self.config.get("model", "network")))
        soft = f"; {SOFT_LABEL_NOTE}" if self.labels == "soft" else ""
        return (f"{100 * self.mean:.1f} ± {100 * self.std:.1f} % "
                f"({k} {model} run{'s' if k != 1 else ''}, {epochs} epoch{'s' if epochs != 1 else ''}{soft})")

    def to_dict(self, runs: bool = False) -> dict[str, Any]:
        """JSON-able summary (with each run's record when ``runs``)."""
        out = {"mean": self.mean, "std": self.std, "accuracies": list(self.accuracies),
               "config": self.config, "summary": str(self)}
        if runs:
            out["runs"] = [r.to_dict() for r in self.runs]
        return out


# --------------------------------------------------------------------------- helpers


def run_seed(base_seed: int, run: int) -> int:
    """The seed of network ``run`` of an evaluation with ``base_seed`` (a pure function).

    Mixed with numpy's ``SeedSequence`` so that neighbouring base seeds do not share runs.
    """
    return int(np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, int(run)]).generate_state(1)[0])


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_run_model(model: str, data: "ImageData", seed: int, model_kwargs: dict | None = None,
                   device: str | torch.device | None = "cpu") -> nn.Module:
    """The freshly initialised network that a run with ``seed`` starts from.

    Weights are drawn on the CPU from ``seed`` (the global generator is left untouched), so a
    seed gives the same network on any device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_model(model, data.channels, data.num_classes, data.image_size, **(model_kwargs or {}))
    return net.to(_device(device))


def _as_float(lr: float | Tensor) -> float:
    value = float(lr.detach().item() if isinstance(lr, Tensor) else lr)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"the learning rate must be a positive number, got {value}; "
                         "pass the set's learned syn_lr, or 0.01 for real images")
    return value


def _check_set(images: Tensor, labels: Tensor, data: "ImageData", need_size: bool) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [N, C, H, W], got {shape}")
    if images.shape[1] != data.channels:
        raise ValueError(f"images have {images.shape[1]} channels but {data.name} has {data.channels}; "
                         "load the dataset the set was made from")
    if need_size and tuple(images.shape[-2:]) != (data.image_size, data.image_size):
        raise ValueError(f"images are {tuple(images.shape[-2:])} pixels but {data.name} is "
                         f"{data.image_size}x{data.image_size}; a larger canvas (texture mode) needs a "
                         "train_transform that crops it to the image size")
    n = images.shape[0]
    if n == 0:
        raise ValueError("the set is empty; pass at least one image")
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a tensor, got {type(labels).__name__}")
    if labels.dim() == 1 and not labels.is_floating_point():
        if labels.shape[0] != n:
            raise ValueError(f"{n} images but {labels.shape[0]} labels")
        if labels.min() < 0 or labels.max() >= data.num_classes:
            raise ValueError(f"labels must lie in 0..{data.num_classes - 1} for {data.name}, "
                             f"got {int(labels.min())}..{int(labels.max())}")
    elif labels.dim() == 2 and labels.is_floating_point():
        if tuple(labels.shape) != (n, data.num_classes):
            raise ValueError(f"soft labels must be [N, num_classes] = [{n}, {data.num_classes}], "
                             f"got {tuple(labels.shape)}")
    else:
        raise ValueError("labels must be integer class indices [N] (hard) or float class "
                         f"probabilities [N, num_classes] (soft); got {labels.dtype} {tuple(labels.shape)}")


def _prepare(images: Tensor, data: "ImageData", device: torch.device) -> Tensor:
    """uint8 images are preprocessed with ``data``; float ones are taken as already preprocessed."""
    if images.dtype == torch.uint8:
        return data.preprocess(images, device=device)
    return images.detach().to(device=device, dtype=torch.float32)


def _resolve_eval(data: "ImageData", eval_on: EvalOn, device: torch.device) -> tuple[Tensor, Tensor]:
    if isinstance(eval_on, str):
        if eval_on == "test":
            return data.test_tensors(device)  # cached by the ImageData, per device
        if eval_on == "train":
            return data.train_tensors(device)
        raise ValueError(f"eval_on must be 'test', 'train', an ImageData (e.g. the val_part of "
                         f"split_validation) or a tuple (images, labels); got {eval_on!r}")
    if isinstance(eval_on, tuple):
        if len(eval_on) != 2:
            raise ValueError("eval_on as a tuple must be (images, labels)")
        x, y = eval_on
        if x.dim() != 4 or x.shape[1] != data.channels or y.shape[:1] != x.shape[:1]:
            raise ValueError(f"eval_on images must be [N, {data.channels}, H, W] with N labels; got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        return _prepare(x, data, device), y.to(device)
    if hasattr(eval_on, "test_images"):  # another ImageData, e.g. the val_part of split_validation
        return eval_on.test_tensors(device)
    raise ValueError(f"cannot evaluate on {type(eval_on).__name__}; pass 'test', 'train', an "
                     "ImageData or a tuple (images, labels)")


@torch.no_grad()
def _accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> float:
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, x.shape[0], batch):
        correct += int((net(x[start:start + batch]).argmax(1) == y[start:start + batch]).sum())
    net.train(was_training)
    return correct / max(1, x.shape[0])


def _make_dsa(dsa: bool | DSA, data: "ImageData") -> DSA | None:
    if isinstance(dsa, DSA):
        return dsa
    return DSA(data.dsa_strategy) if dsa else None


# --------------------------------------------------------------------------- training


def _train_one(model: str, x: Tensor, y: Tensor, data, x_eval: Tensor, y_eval: Tensor, *, lr: float,
               epochs: int, batch_size: int, momentum: float, weight_decay: float, dsa: DSA | None,
               seed: int, device: torch.device, model_kwargs: dict | None, train_transform,
               lr_decay: bool, on_epoch_end, tick) -> RunResult:
    start_time = time.perf_counter()
    net = make_run_model(model, data, seed, model_kwargs, device)
    net.train()
    gen = torch.Generator().manual_seed(seed)  # batch order and augmentations, drawn on the CPU
    n = x.shape[0]
    decay_epoch = epochs // 2 if (lr_decay and epochs >= 2) else None
    soft = y.dim() == 2

    def new_optimizer(rate: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay)

    optimizer = new_optimizer(lr)
    loss_curve: list[float] = []
    lr_curve: list[float] = []
    train_loss = train_acc = float("nan")
    diverged = False
    for epoch in range(epochs):
        if epoch == decay_epoch:  # the paper's code builds a new optimiser: momentum restarts
            optimizer = new_optimizer(lr * 0.1)
        lr_curve.append(float(optimizer.param_groups[0]["lr"]))
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for begin in range(0, n, batch_size):
            idx = perm[begin:begin + batch_size]
            xb, yb = x[idx], y[idx]
            if train_transform is not None:
                xb = train_transform(xb, gen)
            if dsa is not None:
                xb = dsa(xb, gen)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * idx.shape[0]
                target = yb.argmax(1) if soft else yb
                correct += (out.argmax(1) == target).sum()
        train_loss = float(loss_sum) / n  # one synchronisation per epoch
        train_acc = float(correct) / n
        loss_curve.append(train_loss)
        if on_epoch_end is not None:
            on_epoch_end(epoch, net, optimizer)
        if tick is not None:
            tick()
        if not math.isfinite(train_loss):
            diverged = True
            warnings.warn(f"{model} (seed {seed}): the training loss became {train_loss} in epoch {epoch} "
                          f"with lr {lr_curve[-1]:g}; training stopped. A smaller lr usually helps.",
                          RuntimeWarning, stacklevel=3)
            if tick is not None:
                for _ in range(epochs - epoch - 1):
                    tick()
            break
    test_acc = _accuracy(net, x_eval, y_eval)
    return RunResult(test_acc=test_acc, train_acc=train_acc, train_loss=train_loss, seed=seed,
                     model=model, epochs=epochs, loss_curve=loss_curve, lr_curve=lr_curve,
                     seconds=time.perf_counter() - start_time, diverged=diverged)


def train_and_test(
    model_name: str,
    images: Tensor,
    labels: Tensor,
    data: "ImageData",
    *,
    lr: float | Tensor = 0.01,
    epochs: int,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    dsa: bool | DSA = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    model_kwargs: dict | None = None,
    train_transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    eval_on: EvalOn = "test",
    lr_decay: bool = True,
    on_epoch_end: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
    progress: bool = False,
) -> RunResult:
    """Train one fresh ``model_name`` network on ``(images, labels)`` and test it.

    Args:
        images: ``[N, C, H, W]`` float, in ``data``'s preprocessed space (normalised, or ZCA-
            whitened when ``data`` was loaded with ZCA) -- a distilled set is; uint8 images are
            preprocessed with ``data.preprocess``.
        labels: int64 ``[N]`` class indices, or float ``[N, num_classes]`` class probabilities
            (soft labels: soft cross-entropy).
        data: the dataset (channels, classes, DSA strategy, the evaluation split).
        lr: learning rate (a distilled set's ``syn_lr``; 0.01 for real images); ×0.1 from epoch
            ``epochs // 2`` on unless ``lr_decay=False``.
        epochs: passes over the set (the paper: 1000).
        dsa: augment every training batch with the dataset's DSA (or pass a :class:`DSA`).
        seed: fixes the initial weights, batch order and augmentations.
        train_transform: optional ``(x, generator) -> x`` applied to each batch before DSA (texture
            mode: random toroidal crops of canvases larger than the image size).
        eval_on: ``"test"`` (``data``'s test split), ``"train"``, another ``ImageData`` (its test
            split: pass the ``val_part`` of :func:`split_validation`) or ``(images, labels)``.
        on_epoch_end: optional ``(epoch, net, optimizer) -> None`` called after each epoch.
        progress: show a tqdm bar over epochs.

    Returns:
        A :class:`RunResult`.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dev = _device(device)
    _check_set(images, labels, data, need_size=train_transform is None)
    x = _prepare(images, data, dev)
    y = labels.detach().to(dev)
    x_eval, y_eval = _resolve_eval(data, eval_on, dev)
    bar = _bar(epochs, f"{_pretty(model_name)}", progress)
    try:
        return _train_one(model_name, x, y, data, x_eval, y_eval, lr=_as_float(lr), epochs=epochs,
                          batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                          dsa=_make_dsa(dsa, data), seed=seed, device=dev, model_kwargs=model_kwargs,
                          train_transform=train_transform, lr_decay=lr_decay, on_epoch_end=on_epoch_end,
                          tick=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def evaluate_set(
    images: Tensor,
    labels: Tensor,
    data: "ImageData",
    *,
    model: str = "convnet",
    num_runs: int = 5,
    lr: float | Tensor = 0.01,
    epochs: int,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    dsa: bool | DSA = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    model_kwargs: dict | None = None,
    train_transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    eval_on: EvalOn = "test",
    lr_decay: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Train ``num_runs`` fresh networks on the set and report test accuracy mean ± std.

    Network ``k`` uses seed :func:`run_seed` ``(seed, k)`` (so it equals
    ``train_and_test(..., seed=run_seed(seed, k))``). The other arguments are those of
    :func:`train_and_test`; ``lr`` is the set's learned ``syn_lr`` for a distilled set.
    """
    _check_set(images, labels, data, need_size=train_transform is None)
    return _evaluate_runs(lambda k: (images, labels), data, model=model, num_runs=num_runs, lr=lr,
                          epochs=epochs, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                          dsa=dsa, seed=seed, device=device, model_kwargs=model_kwargs,
                          train_transform=train_transform, eval_on=eval_on, lr_decay=lr_decay, progress=progress,
                          same_set=True)


def evaluate_soft_and_hard(images: Tensor, soft_labels: Tensor, hard_labels: Tensor, data: "ImageData",
                           **kwargs: Any) -> dict[str, EvalResult]:
    """Evaluate one set of images twice under the same recipe: ``{"hard": ..., "soft": ...}``.

    ``soft_labels`` are ``[N, num_classes]`` probabilities (a distilled set's ``soft_labels``),
    ``hard_labels`` the class indices ``[N]`` of the same images; keyword arguments go to
    :func:`evaluate_set` for both (same networks, seeds and epochs). Report the soft number only
    beside the hard one: it includes knowledge distillation (:data:`SOFT_LABEL_NOTE`).
    """
    if not (isinstance(soft_labels, Tensor) and soft_labels.dim() == 2 and soft_labels.is_floating_point()):
        raise ValueError("soft_labels must be float class probabilities [N, num_classes]")
    if not (isinstance(hard_labels, Tensor) and hard_labels.dim() == 1 and not hard_labels.is_floating_point()):
        raise ValueError("hard_labels must be integer class indices [N]")
    return {"hard": evaluate_set(images, hard_labels, data, **kwargs),
            "soft": evaluate_set(images, soft_labels, data, **kwargs)}


def _evaluate_runs(set_for_run: Callable[[int], tuple[Tensor, Tensor]], data: "ImageData", *, model: str,
                   num_runs: int, lr: float | Tensor, epochs: int, batch_size: int, momentum: float,
                   weight_decay: float, dsa: bool | DSA, seed: int, device, model_kwargs: dict | None,
                   train_transform, eval_on: EvalOn, lr_decay: bool, progress: bool,
                   same_set: bool) -> EvalResult:
    """``num_runs`` networks; network ``k`` trains on ``set_for_run(k)`` with seed ``run_seed(seed, k)``."""
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise ValueError(f"num_runs must be a positive integer, got {num_runs!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dev = _device(device)
    rate = _as_float(lr)
    x_eval, y_eval = _resolve_eval(data, eval_on, dev)
    aug = _make_dsa(dsa, data)
    bar = _bar(num_runs * epochs, f"evaluate {_pretty(model)}", progress)
    runs: list[RunResult] = []
    cached: tuple[Tensor, Tensor] | None = None
    try:
        for k in range(num_runs):
            if cached is None or not same_set:
                xk, yk = set_for_run(k)
                cached = (_prepare(xk, data, dev), yk.detach().to(dev))
            xk, yk = cached
            runs.append(_train_one(model, xk, yk, data, x_eval, y_eval, lr=rate, epochs=epochs,
                                   batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                                   dsa=aug, seed=run_seed(seed, k), device=dev, model_kwargs=model_kwargs,
                                   train_transform=train_transform, lr_decay=lr_decay, on_epoch_end=None,
                                   tick=bar.update if bar is not None else None))
            if bar is not None:
                bar.set_postfix(acc=f"{100 * runs[-1].test_acc:.1f}%")
    finally:
        if bar is not None:
            bar.close()
    accs = [r.test_acc for r in runs]
    if isinstance(eval_on, str):
        eval_name = eval_on
    else:
        eval_name = "val_part" if hasattr(eval_on, "test_images") else "tensors"
    config = {
        "dataset": data.name, "model": model, "model_kwargs": dict(model_kwargs or {}), "num_runs": num_runs,
        "num_images": int(cached[0].shape[0]), "lr": rate, "epochs": epochs, "batch_size": batch_size,
        "momentum": momentum, "weight_decay": weight_decay, "lr_decay": lr_decay,
        "dsa": aug.strategy if aug is not None else None, "train_transform": train_transform is not None,
        "base_seed": seed, "seeds": [r.seed for r in runs], "eval_on": eval_name,
        "eval_size": int(x_eval.shape[0]), "device": str(dev), "diverged": sum(r.diverged for r in runs),
        "labels": "soft" if cached[1].dim() == 2 else "hard",
    }
    if config["labels"] == "soft":
        config["label_note"] = SOFT_LABEL_NOTE
    return EvalResult(mean=float(np.mean(accs)), std=float(np.std(accs)), accuracies=accs, config=config,
                      runs=runs)


# --------------------------------------------------------------------------- baselines


def _defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` completed with :func:`evaluate_set`'s defaults (for the internal runner)."""
    import inspect

    params = inspect.signature(evaluate_set).parameters
    unknown = set(kwargs) - set(params) - {"seed"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
    out = {name: p.default for name, p in params.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}
    out.update(kwargs)
    out.pop("seed", None)
    return out


def random_real_subset(data: "ImageData", ipc: int, seed: int = 0,
                       device: str | torch.device | None = "cpu") -> tuple[Tensor, Tensor]:
    """``ipc`` random real training images per class, preprocessed, with their int64 labels.

    The images come in class order (class 0 first); the choice depends only on ``seed``.
    """
    if ipc < 1:
        raise ValueError(f"ipc must be at least 1, got {ipc}")
    gen = torch.Generator().manual_seed(int(seed))
    labels = data.train_labels.cpu()
    chosen = []
    for c in range(data.num_classes):
        pool = (labels == c).nonzero().flatten()
        if pool.numel() < ipc:
            raise ValueError(f"class {c} ({data.classes[c]}) of {data.name} has only {pool.numel()} training "
                             f"images; ask for ipc <= {pool.numel()}")
        chosen.append(pool[torch.randperm(pool.numel(), generator=gen)[:ipc]])
    idx = torch.cat(chosen)
    return data.preprocess(data.train_images[idx], device=device), labels[idx].clone()


def evaluate_random_real(data: "ImageData", ipc: int, *, resample: bool = True, seed: int = 0,
                         **kwargs: Any) -> EvalResult:
    """The *random real* baseline: train on ``ipc`` random real images per class (lr 0.01).

    With ``resample`` (default) network ``k`` trains on its own subset, drawn with seed
    :func:`run_seed` ``(seed, k)``, so the spread includes the choice of images; otherwise all
    networks share the subset of ``seed``. Other keyword arguments (``epochs`` is required) go to
    :func:`evaluate_set`.
    """
    if "epochs" not in kwargs:
        raise TypeError("evaluate_random_real needs epochs=... (the paper trains 1000 epochs)")
    if resample:
        def set_for_run(k: int) -> tuple[Tensor, Tensor]:
            return random_real_subset(data, ipc, run_seed(seed, k))
    else:
        fixed = random_real_subset(data, ipc, seed)

        def set_for_run(k: int) -> tuple[Tensor, Tensor]:
            return fixed
    result = _evaluate_runs(set_for_run, data, seed=seed, same_set=not resample, **_defaults(kwargs))
    result.config.update(baseline="random-real", ipc=ipc, resample=resample)
    return result


def evaluate_full_data(data: "ImageData", *, epochs: int, num_runs: int = 1, **kwargs: Any) -> EvalResult:
    """The *whole dataset* upper bound: train on the entire training split, same recipe, lr 0.01.

    ``epochs`` is required and should be far smaller than for a tiny set: each epoch of the
    full split is hundreds of SGD steps at batch 256 (CIFAR-10: 196), so a few dozen epochs
    (e.g. 30-50) train a ConvNet to near convergence, where 1000 epochs on a 10-image set are
    only 1000 steps. One run by default, because each one is long on a CPU.
    """
    images, labels = data.train_tensors(_device(kwargs.get("device")))  # preprocessed once, cached
    result = evaluate_set(images, labels, data, epochs=epochs, num_runs=num_runs, **kwargs)
    result.config.update(baseline="full")
    return result


def evaluate_cross_architecture(images: Tensor, labels: Tensor, data: "ImageData",
                                models: Sequence[str] = DEFAULT_MODELS, **kwargs: Any) -> dict[str, EvalResult]:
    """Evaluate one set on several architectures (the paper's cross-architecture table).

    Keyword arguments (``epochs`` required, ``lr``, ``num_runs``, ...) go to :func:`evaluate_set`
    for every model; returns ``{model: EvalResult}`` in the order given.
    """
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if "model_kwargs" in kwargs and len(models) > 1:
        raise ValueError("model_kwargs apply to one architecture; evaluate models one at a time to change them")
    return {name: evaluate_set(images, labels, data, model=name, **kwargs) for name in models}


# --------------------------------------------------------------------------- validation split


def split_validation(data: "ImageData", per_class: int, seed: int = 0) -> tuple["ImageData", "ImageData"]:
    """Hold out ``per_class`` training images of each class as a validation split.

    Returns ``(train_part, val_part)``, two :class:`~mttlib.data.ImageData` with the same
    normalisation (and ZCA) as ``data``:

    * ``train_part``: the training split without the held-out images; the test split unchanged.
      Train experts and distil on it; report final numbers on its test split.
    * ``val_part``: the same training split, with the held-out images as its *test* split.
      Choose checkpoints with ``evaluate_set(..., eval_on=val_part)`` -- the test set is never
      looked at.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    gen = torch.Generator().manual_seed(int(seed))
    labels = data.train_labels.cpu()
    keep = torch.ones(labels.shape[0], dtype=torch.bool)
    for c in range(data.num_classes):
        pool = (labels == c).nonzero().flatten()
        if pool.numel() <= per_class:
            raise ValueError(f"class {c} ({data.classes[c]}) has {pool.numel()} training images; a "
                             f"validation split of {per_class} per class would leave none for training. "
                             f"Use per_class < {pool.numel()}")
        keep[pool[torch.randperm(pool.numel(), generator=gen)[:per_class]]] = False
    rest, held = keep.nonzero().flatten(), (~keep).nonzero().flatten()
    train_x, train_y = data.train_images[rest], data.train_labels[rest]
    train_part = dataclasses.replace(data, train_images=train_x, train_labels=train_y)
    val_part = dataclasses.replace(data, train_images=train_x, train_labels=train_y,
                                   test_images=data.train_images[held], test_labels=data.train_labels[held])
    return train_part, val_part


# --------------------------------------------------------------------------- textures


def evaluate_textures(
    canvases: Tensor,
    labels: Tensor,
    data: ImageData,
    lr: float | Tensor,
    *,
    epochs: int,
    num_runs: int = 5,
    model: str = "convnet",
    baselines: Sequence[str] = ("real",),
    baseline_lr: float | None = 0.01,
    seed: int = 0,
    classes: Sequence[int | str] | str = "present",
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Test accuracy of fresh networks trained on crops of ``canvases``, with baselines.

    Training uses :func:`mttlib.texture.crop_transform`: each time a canvas is drawn into a batch the network
    sees one random toroidal crop of image size (then the evaluation recipe's DSA). Baselines go
    through the very same recipe (epochs, crops, augmentation, networks and seeds), with as many
    samples per class as there are canvases per class:

    * ``"real"``: random real training images, each a 1x1 canvas -- its crops are the image
      rolled with wrap-around. This is the paper's "random real" baseline with the texture
      recipe; each network draws its own images (:func:`evaluate_random_real`).
    * ``"real_tiles"``: canvases of the textures' size, each tiled with real images of its class
      (``mttlib.texture.init_canvases(init="real")``): the same pixel budget as the textures, and the
      starting point of a real-initialised distillation.

    ``lr`` is the textures' learned ``syn_lr``; baselines train with ``baseline_lr`` (0.01, the
    paper's rate for real images; ``None`` uses ``lr``). Other keyword arguments (``device``,
    ``progress``, ``model_kwargs``, ``eval_on``, ...) go to :func:`evaluate_set`.

    ``classes``: which classes the task has. ``"present"`` (default) takes the classes the
    textures cover: textures of 4 of CIFAR-10's classes are then tested as a 4-way task on those
    classes' test images (:func:`mttlib.texture.class_subset`), and the baselines draw from the same classes; a
    set that covers every class is tested on the whole dataset. ``"all"`` keeps every class;
    a list of indices or names picks them.
    Returns ``{"textures": EvalResult, "<baseline>": EvalResult, ...}``; each result's config
    names the classes under ``"eval_classes"``.
    """
    texture.check_texture_data(data)
    if canvases.dim() != 4 or labels.dim() != 1 or canvases.shape[0] != labels.shape[0]:
        raise ValueError(f"need canvases [N, C, H, W] and labels [N], got {tuple(canvases.shape)} "
                         f"and {tuple(labels.shape)}")
    labels = labels.detach().cpu().long()
    if isinstance(classes, str) and classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present', 'all' or a list of classes, got {classes!r}")
    wanted = (sorted(set(labels.tolist())) if classes == "present" else None if classes == "all"
              else texture.class_indices(data, classes))
    if wanted is not None and len(wanted) < data.num_classes:
        missing = sorted(set(labels.tolist()) - set(wanted))
        if missing:
            raise ValueError(f"the textures have labels {missing} outside classes={list(classes)}")
        lookup = {c: i for i, c in enumerate(wanted)}
        data = texture.class_subset(data, wanted)
        labels = torch.tensor([lookup[int(c)] for c in labels])
    counts = torch.bincount(labels.cpu(), minlength=data.num_classes)
    per_class = int(counts.max())
    if baselines and not bool((counts == per_class).all()):
        raise ValueError(f"baselines need the same number of canvases per class, got counts {counts.tolist()}; "
                         "pass baselines=() to evaluate the textures alone")
    common = dict(epochs=epochs, num_runs=num_runs, model=model, seed=seed,
                  train_transform=texture.crop_transform(data.image_size), **evaluate_kwargs)
    rate = lr if baseline_lr is None else baseline_lr
    results = {"textures": evaluate_set(canvases.detach(), labels, data, lr=lr, **common)}
    for name in baselines:
        if name == "real":
            results[name] = evaluate_random_real(data, per_class, lr=rate, **common)
        elif name == "real_tiles":
            canvas_size = max(1, canvases.shape[-1] // data.image_size)
            x, y = texture.init_canvases(data, per_class, canvas_size, "real", torch.Generator().manual_seed(seed))
            results[name] = evaluate_set(x, y, data, lr=rate, **common)
        else:
            raise ValueError(f"unknown baseline {name!r}; use 'real' or 'real_tiles'")
        results[name].config.update(texture_baseline=name)
    for result in results.values():
        result.config.update(eval_classes=list(data.classes))
    return results


# --------------------------------------------------------------------------- released tensors


#: The per-channel mean and std the reference implementation normalises with (no-ZCA runs). It
#: uses CIFAR-10's values for CIFAR-100 too, so its CIFAR-100 sets live in that space.
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
REFERENCE_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": _CIFAR10_STATS, "cifar10-mini": _CIFAR10_STATS, "cifar100": _CIFAR10_STATS,
    "tiny-imagenet": _IMAGENET_STATS, "imagenet:": _IMAGENET_STATS,
}


def released_space(data: "ImageData") -> "ImageData":
    """``data`` as the reference implementation preprocesses it, for its released tensors.

    ZCA data is returned as it is: the kit whitens the [0, 1] pixels as the reference does.
    Without ZCA the reference normalises with fixed constants (:data:`REFERENCE_NORMALISATION`,
    CIFAR-10's for CIFAR-100); a dataset it never used keeps its own statistics.
    """
    if data.zca is not None:
        return data
    name = data.name.lower()
    stats = REFERENCE_NORMALISATION.get(name) or next(
        (v for k, v in REFERENCE_NORMALISATION.items() if k.endswith(":") and name.startswith(k)), None)
    if stats is None or stats[0] == data.mean and stats[1] == data.std:
        return data
    return dataclasses.replace(data, mean=stats[0], std=stats[1])


def load_released(images_path: str | Path, labels_path: str | Path,
                  data: "ImageData | None" = None) -> tuple[Tensor, Tensor]:
    """Load a published distilled set (the authors' ``images_best.pt`` and ``labels_best.pt``).

    Loading never unpickles arbitrary objects (``torch.load(weights_only=True)``). The images
    are in the reference implementation's *preprocessed* space: ZCA-whitened [0, 1] pixels for
    the sets distilled with ZCA (the paper's CIFAR sets), else pixels normalised with the
    reference's constants -- so evaluate them on ``released_space(data)``, with ``data`` loaded
    with the same ZCA setting, or the networks see meaningless inputs. The learning rate is
    not part of these files: pass the published one by hand to :func:`evaluate_set`.

    With ``data`` the shapes are checked against its channels, image size and classes.
    Returns ``(images float32 [N, C, H, W], labels int64 [N])`` on the CPU.
    """
    images, labels = safe_load(images_path), safe_load(labels_path)
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{images_path} should hold one float tensor [N, C, H, W]; it holds {what}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        what = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{labels_path} should hold one integer tensor [N] of class indices; it holds {what}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has "
                         f"{labels.shape[0]} labels; are they from the same run?")
    if data is not None:
        c, h, w = images.shape[1:]
        if c != data.channels or (h, w) != (data.image_size, data.image_size):
            raise ValueError(f"the released images are {c}x{h}x{w} but {data.name} is "
                             f"{data.channels}x{data.image_size}x{data.image_size}; load the dataset "
                             "they were distilled from")
        if labels.numel() and (labels.min() < 0 or labels.max() >= data.num_classes):
            raise ValueError(f"the released labels run {int(labels.min())}..{int(labels.max())} but {data.name} "
                             f"has {data.num_classes} classes; load the dataset they were distilled from")
    return images.detach().float().contiguous(), labels.long()


# --------------------------------------------------------------------------- set files


def load_set_file(path: str | Path) -> dict[str, Any]:
    """Read a distilled set file (``images``, ``labels``, ``syn_lr``, ``config``), never unpickling code."""
    blob = safe_load(path)  # FileNotFoundError / CorruptFileError name the file
    if not isinstance(blob, dict) or "images" not in blob or "labels" not in blob:
        raise ValueError(f"{path} is not a distilled set file: expected a dict with 'images', 'labels', "
                         "'syn_lr' and 'config' (as written by the distillation)")
    return blob


def check_set_recipe(blob: dict[str, Any], where: str | Path) -> None:
    """Refuse a ZCA set file distilled with another whitening than today's (see :mod:`mttlib.zca`)."""
    check_recipe({"recipe": blob.get("zca_recipe")}, str(where))

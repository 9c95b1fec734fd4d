"""Evaluate a small training set: train fresh networks on it alone and report their test accuracy.

Every number of the MTT paper is made this way. The :class:`Recipe` is the paper's: SGD with
momentum 0.9, weight decay 5e-4, batches of 256; the learning rate (a set's learned ``syn_lr``,
0.01 for real images) drops ×0.1 at half-time with a fresh optimiser; DSA on every batch; 1000
epochs. Network ``k`` has seed :func:`run_seed` ``(seed, k)``; the loop is :func:`mttlib.train.train`.
Baselines share the recipe (:mod:`mttlib.ranking` adds the full-data ceiling and DD-Ranking's scores);
soft-label results are marked (they include knowledge distillation, so they are not comparable with
hard labels). Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mttlib import texture
from mttlib.augment import DSA
from mttlib.data import ImageData
from mttlib.models import make_model
from mttlib.train import accuracy, check_precision, derive_seed, pick_device, seeded, train

__all__ = ["Recipe", "RunResult", "EvalResult", "run_seed", "make_run_model", "train_and_test", "evaluate_set",
           "evaluate_runs", "evaluate_soft_and_hard", "SOFT_LABEL_NOTE", "random_real_subset", "evaluate_random_real",
           "evaluate_cross_architecture", "split_validation", "evaluate_textures", "PAPER_EPOCHS", "DEFAULT_MODELS"]

PAPER_EPOCHS = 1000
SOFT_LABEL_NOTE = ("trained with soft labels: mixes in knowledge distillation from the experts, "
                   "not comparable with hard-label accuracy")
DEFAULT_MODELS = ("convnet", "alexnet", "vgg11", "resnet18")
_PRETTY = {"convnet": "ConvNet", "alexnet": "AlexNet", "vgg11": "VGG11", "resnet18": "ResNet18", "mlp": "MLP"}
EvalOn = Union[str, ImageData, tuple]  # "test", "train", another ImageData (its test split) or (x, y)


@dataclass
class Recipe:
    """How the networks of an evaluation are trained (the paper's values by default)."""

    epochs: int
    lr: float | Tensor = 0.01
    model: str = "convnet"
    model_kwargs: dict | None = None
    num_runs: int = 5
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: bool = True
    dsa: bool | DSA = True
    seed: int = 0
    device: str | torch.device | None = "auto"
    train_transform: Callable[[Tensor, torch.Generator], Tensor] | None = None  # e.g. texture crops
    eval_on: EvalOn = "test"
    progress: bool = True
    precision: str = "fp32"  # "bf16": the forward under autocast (mttlib.train.autocast)
    compile: bool = False  # torch.compile the training (mttlib.train.train)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for name in ("epochs", "num_runs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        value = float(self.lr.detach().item() if isinstance(self.lr, Tensor) else self.lr)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"the learning rate must be a positive number, got {value}; pass the set's "
                             "learned syn_lr, or 0.01 for real images")
        self.lr = value


@dataclass
class RunResult:
    """One network trained on a set and tested: the ``epochs`` it trained (fewer than planned if it stopped
    early), ``loss_curve``/``lr_curve`` per epoch (a plateau stop keeps its tail's losses only) and, when
    recorded, ``test_curve``, the test accuracy after each epoch."""
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
    test_curve: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)


@dataclass
class EvalResult:
    """Test accuracy of ``K`` networks trained on one set: mean, std, every run and the recipe."""

    mean: float
    std: float
    accuracies: list[float]
    config: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list, repr=False)

    @property
    def labels(self) -> str:
        """``"hard"`` (class indices) or ``"soft"`` (class probabilities: see :data:`SOFT_LABEL_NOTE`)."""
        return str(self.config.get("labels", "hard"))

    def epochs_text(self) -> str:
        """The epochs the networks trained (``config["epochs_trained"]``): ``"300"``, or ``"17 of 40"``
        (``"15-19 of 40"``) when they stopped early (a plateau stop, a divergence)."""
        planned = self.config.get("epochs")
        done = sorted(set(self.config.get("epochs_trained", [planned])))
        text = str(done[0]) if len(done) == 1 else f"{done[0]}-{done[-1]}"
        return text if done == [planned] else f"{text} of {planned}"

    def __str__(self) -> str:
        k, soft = len(self.accuracies), f"; {SOFT_LABEL_NOTE}" if self.labels == "soft" else ""
        model = _PRETTY.get(self.config.get("model"), self.config.get("model", "network"))
        return (f"{100 * self.mean:.1f} ± {100 * self.std:.1f} % ({k} {model} run{'s' if k != 1 else ''}, "
                f"{self.epochs_text()} epoch{'s' if self.epochs_text() != '1' else ''}{soft})")

    def table_row(self, **columns: Any) -> dict[str, Any]:
        """A row of an accuracy table: ``columns`` (method, ipc, ...), then mean, std, networks and epochs."""
        return {**columns, "mean": self.mean, "std": self.std, "runs": len(self.accuracies),
                "epochs": self.epochs_text()}

    def to_dict(self, runs: bool = False) -> dict[str, Any]:
        """JSON-able summary (with each run's record when ``runs``); :meth:`from_dict` reads it back."""
        out = {"mean": self.mean, "std": self.std, "accuracies": list(self.accuracies), "config": self.config}
        return {**out, "summary": str(self), **({"runs": [r.to_dict() for r in self.runs]} if runs else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        return cls(d["mean"], d["std"], d["accuracies"], d["config"], [RunResult(**r) for r in d.get("runs", [])])


def run_seed(base_seed: int, run: int) -> int:
    """The seed of network ``run`` of an evaluation with ``base_seed`` (a pure function)."""
    return derive_seed("mttlib.evaluate", int(base_seed), int(run))


def make_run_model(model: str, data: ImageData, seed: int, model_kwargs: dict | None = None,
                   device: str | torch.device | None = "cpu") -> nn.Module:
    """The freshly initialised network a run with ``seed`` starts from (drawn on the CPU)."""
    with seeded(seed, torch.device("cpu")):
        net = make_model(model, data.channels, data.num_classes, data.image_size, **(model_kwargs or {}))
    return net.to(pick_device(device))


def _check_set(images: Tensor, labels: Tensor, data: ImageData, cropped: bool) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != data.channels:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [N, {data.channels}, H, W] with {data.name}'s channels, got {shape}")
    if not cropped and tuple(images.shape[-2:]) != (data.image_size,) * 2:
        raise ValueError(f"images are {tuple(images.shape[-2:])} pixels but {data.name} is {data.image_size}x"
                         f"{data.image_size}; a larger canvas (texture mode) needs a train_transform that crops it")
    n, hard = images.shape[0], labels.dim() == 1 and not labels.is_floating_point()
    if hard and (labels.shape[0] != n or n == 0):
        raise ValueError(f"{n} images but {labels.shape[0]} labels")
    if hard and (labels.min() < 0 or labels.max() >= data.num_classes):
        raise ValueError(f"labels must lie in 0..{data.num_classes - 1} for {data.name}, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    if not hard and not (labels.is_floating_point() and tuple(labels.shape) == (n, data.num_classes)):
        raise ValueError(f"labels must be class indices [N] (hard labels) or class probabilities [N, "
                         f"{data.num_classes}] (soft labels); got {labels.dtype} {tuple(labels.shape)}")


def _prepare(images: Tensor, data: ImageData, device: torch.device) -> Tensor:
    """uint8 images are preprocessed with ``data``; float ones are taken as already preprocessed."""
    return data.preprocess(images, device=device) if images.dtype == torch.uint8 else images.detach().float().to(device)


def _eval_split(data: ImageData, eval_on: EvalOn, device: torch.device) -> tuple[Tensor, Tensor]:
    if isinstance(eval_on, ImageData):  # e.g. the val_part of split_validation
        return eval_on.test_tensors(device)
    if isinstance(eval_on, tuple) and len(eval_on) == 2:
        return _prepare(eval_on[0], data, device), eval_on[1].to(device)
    if eval_on in ("test", "train"):
        return getattr(data, f"{eval_on}_tensors")(device)
    raise ValueError(f"eval_on must be 'test', 'train', an ImageData or (images, labels); got {eval_on!r}")


def _train_one(recipe: Recipe, x: Tensor, y: Tensor, data: ImageData, x_eval: Tensor, y_eval: Tensor, seed: int,
               on_epoch_end: Callable | None = None, bar: tqdm | None = None,
               schedule: Callable | None = None) -> RunResult:
    start = time.perf_counter()
    net = make_run_model(recipe.model, data, seed, recipe.model_kwargs, x.device)
    dsa = recipe.dsa if isinstance(recipe.dsa, DSA) else DSA(data.dsa_strategy) if recipe.dsa else None
    # one generator, drawn on the CPU, for the batch order, the transform and the augmentation
    fit = functools.partial(train, net, x, y, batch_size=recipe.batch_size, momentum=recipe.momentum,
                            weight_decay=recipe.weight_decay, dsa=dsa, shuffle=torch.Generator().manual_seed(seed),
                            train_transform=recipe.train_transform, precision=recipe.precision,
                            compile=recipe.compile, on_batch=None if bar is None else lambda n: bar.update(n / len(x)))
    history, curve = schedule(fit, x_eval, y_eval) if schedule else (fit(
        epochs=recipe.epochs, lr=recipe.lr, lr_decay=recipe.lr_decay, on_epoch_end=on_epoch_end), [])
    if history.diverged:
        warnings.warn(f"{recipe.model} (seed {seed}): the training loss became {history.train_loss[-1]} with lr "
                      f"{history.lr[-1]:g}; training stopped. A smaller lr often helps.", RuntimeWarning, stacklevel=4)
    return RunResult(test_acc=accuracy(net, x_eval, y_eval)[0], train_acc=history.train_acc[-1],
                     train_loss=history.train_loss[-1], seed=seed, model=recipe.model, epochs=len(history.lr),
                     loss_curve=history.train_loss, lr_curve=history.lr, seconds=time.perf_counter() - start,
                     diverged=history.diverged, test_curve=curve)


def train_and_test(model_name: str, images: Tensor, labels: Tensor, data: ImageData, *,
                   on_epoch_end: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
                   **recipe: Any) -> RunResult:
    """Train one fresh ``model_name`` network on ``(images, labels)`` with seed ``recipe['seed']`` and test it.

    ``images`` are float and preprocessed (a distilled set is) or uint8 (preprocessed here);
    labels are class indices or probabilities. Keyword arguments are :class:`Recipe` fields
    (``epochs`` is required); ``on_epoch_end(epoch, net, optimizer)`` runs after every epoch.
    """
    r = Recipe(model=model_name, num_runs=1, **{"progress": False, **recipe})
    _check_set(images, labels, data, r.train_transform is not None)
    device = pick_device(r.device)
    x_eval, y_eval = _eval_split(data, r.eval_on, device)
    return _train_one(r, _prepare(images, data, device), labels.detach().to(device), data, x_eval, y_eval,
                      r.seed, on_epoch_end)


def evaluate_set(images: Tensor, labels: Tensor, data: ImageData, **recipe: Any) -> EvalResult:
    """Train ``num_runs`` fresh networks on the set and report their test accuracy mean ± std.

    Keyword arguments are :class:`Recipe` fields (``epochs`` is required; ``lr`` is a distilled
    set's learned ``syn_lr``). Network ``k`` equals ``train_and_test(..., seed=run_seed(seed, k))``.
    Taught in notebook ``02_trajectory_matching``.
    """
    r = Recipe(**recipe)
    _check_set(images, labels, data, r.train_transform is not None)
    return evaluate_runs(lambda k: (images, labels), data, r, same_set=True)


def evaluate_soft_and_hard(images: Tensor, soft_labels: Tensor, hard_labels: Tensor, data: ImageData,
                           **recipe: Any) -> dict[str, EvalResult]:
    """The same images evaluated with hard and with soft labels by the same networks: ``{"hard", "soft"}``. Report
    the soft number only beside the hard one (:data:`SOFT_LABEL_NOTE`). Notebook ``05_beyond_mtt``."""
    if not (soft_labels.dim() == 2 and soft_labels.is_floating_point()):
        raise ValueError("soft_labels must be float class probabilities [N, num_classes]")
    return {"hard": evaluate_set(images, hard_labels, data, **recipe),
            "soft": evaluate_set(images, soft_labels, data, **recipe)}


def evaluate_runs(set_for_run: Callable[[int], tuple[Tensor, Tensor]], data: ImageData, r: Recipe,
                  same_set: bool, schedule: Callable | None = None) -> EvalResult:
    """``r.num_runs`` networks; network ``k`` trains on ``set_for_run(k)`` (called once if ``same_set``) with
    seed ``run_seed(r.seed, k)``. ``schedule(fit, x_test, y_test) -> (History, test curve)`` replaces the
    recipe's schedule, ``fit(**kw)`` being ``train`` on the run's network and set (:mod:`mttlib.ranking`)."""
    device = pick_device(r.device)
    x_eval, y_eval = _eval_split(data, r.eval_on, device)
    bar = tqdm(total=r.num_runs * r.epochs, desc=f"evaluate {r.model}", unit="epoch", leave=False,
               bar_format="{l_bar}{bar}| {n:.0f}/{total} epochs [{elapsed}<{remaining}]") if r.progress else None
    runs: list[RunResult] = []
    x = y = None
    try:
        for k in range(r.num_runs):
            if x is None or not same_set:
                xk, yk = set_for_run(k)
                x, y = _prepare(xk, data, device), yk.detach().to(device)
            runs.append(_train_one(r, x, y, data, x_eval, y_eval, run_seed(r.seed, k), None, bar, schedule))
    finally:
        if bar is not None:
            bar.close()
    accs = [run.test_acc for run in runs]
    eval_name = r.eval_on if isinstance(r.eval_on, str) else "val_part" if isinstance(r.eval_on, ImageData) else "tuple"
    dsa = r.dsa.strategy if isinstance(r.dsa, DSA) else data.dsa_strategy if r.dsa else None
    config = {"dataset": data.name, "zca": data.zca is not None, "model": r.model,
              "model_kwargs": dict(r.model_kwargs or {}), "num_runs": r.num_runs, "num_images": int(x.shape[0]),
              "lr": r.lr, "epochs": r.epochs, "epochs_trained": [run.epochs for run in runs],
              "batch_size": r.batch_size, "momentum": r.momentum, "weight_decay": r.weight_decay,
              "lr_decay": r.lr_decay, "dsa": dsa, "train_transform": r.train_transform is not None,
              "base_seed": r.seed, "seeds": [run.seed for run in runs], "eval_on": eval_name,
              "eval_size": int(x_eval.shape[0]), "device": str(device), "diverged": sum(run.diverged for run in runs),
              "labels": "soft" if y.dim() == 2 else "hard"}
    config.update({"label_note": SOFT_LABEL_NOTE} if y.dim() == 2 else {})
    return EvalResult(float(np.mean(accs)), float(np.std(accs)), accs, config, runs)


# --- baselines -----------------------------------------------------------------------------------


def random_real_subset(data: ImageData, ipc: int, seed: int = 0,
                       device: str | torch.device | None = "cpu") -> tuple[Tensor, Tensor]:
    """``ipc`` random real training images per class (class order), preprocessed, and their labels."""
    gen = torch.Generator().manual_seed(int(seed))
    labels = data.train_labels.cpu()
    chosen = []
    for c in range(data.num_classes):
        pool = (labels == c).nonzero().flatten()
        if not 1 <= ipc <= pool.numel():
            raise ValueError(f"class {c} ({data.classes[c]}) of {data.name} has {pool.numel()} training images; "
                             f"ask for 1 <= ipc <= {pool.numel()}")
        chosen.append(pool[torch.randperm(pool.numel(), generator=gen)[:ipc]])
    idx = torch.cat(chosen)
    return data.preprocess(data.train_images[idx], device=device), labels[idx].clone()


def evaluate_random_real(data: ImageData, ipc: int, *, resample: bool = True, **recipe: Any) -> EvalResult:
    """The *random real* baseline: ``ipc`` random real images per class under the same recipe.

    With ``resample`` network ``k`` trains on its own draw (seed ``run_seed(seed, k)``), so the
    spread includes the choice of images; otherwise all share the draw of ``seed``.
    """
    r = Recipe(**recipe)
    fixed = None if resample else random_real_subset(data, ipc, r.seed)
    result = evaluate_runs(lambda k: fixed or random_real_subset(data, ipc, run_seed(r.seed, k)), data, r,
                           same_set=not resample)
    result.config.update(baseline="random-real", ipc=ipc, resample=resample)
    return result


def evaluate_cross_architecture(images: Tensor, labels: Tensor, data: ImageData,
                                models: Sequence[str] | str = DEFAULT_MODELS, **recipe: Any) -> dict[str, EvalResult]:
    """One set evaluated on several architectures (the paper's cross-architecture table): ``{model: result}``."""
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if recipe.get("model_kwargs") and len(models) > 1:
        raise ValueError("model_kwargs apply to one architecture; evaluate models one at a time to change them")
    return {name: evaluate_set(images, labels, data, model=name, **recipe) for name in models}


def split_validation(data: ImageData, per_class: int, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Hold out ``per_class`` training images of each class: ``(train_part, val_part)``. ``train_part`` is
    the training split without them (test split unchanged): train experts and distil on it. ``val_part``
    has the held-out images as its *test* split: choose checkpoints with ``evaluate_set(...,
    eval_on=val_part)`` without ever looking at the test set."""
    gen = torch.Generator().manual_seed(int(seed))
    labels = data.train_labels.cpu()
    keep = torch.ones(labels.shape[0], dtype=torch.bool)
    for c in range(data.num_classes):
        pool = (labels == c).nonzero().flatten()
        if not 1 <= per_class < pool.numel():
            raise ValueError(f"class {c} ({data.classes[c]}) has {pool.numel()} training images; use "
                             f"1 <= per_class < {pool.numel()} so that some are left for training")
        keep[pool[torch.randperm(pool.numel(), generator=gen)[:per_class]]] = False
    train_part = replace(data, train_images=data.train_images[keep], train_labels=data.train_labels[keep])
    return train_part, replace(train_part, test_images=data.train_images[~keep],
                                           test_labels=data.train_labels[~keep])


# --- textures ------------------------------------------------------------------------------------


def evaluate_textures(canvases: Tensor, labels: Tensor, data: ImageData, lr: float | Tensor, *,
                      baselines: Sequence[str] = ("real",), baseline_lr: float | None = 0.01,
                      classes: Sequence[int | str] | str = "present", **recipe: Any) -> dict[str, EvalResult]:
    """Test accuracy of fresh networks trained on random crops of ``canvases``, with baselines.

    Each time a canvas is drawn into a batch the network sees one random toroidal crop of image size
    (:func:`mttlib.texture.crop_transform`), then the recipe's DSA. The baselines go through the very
    same recipe with as many samples per class as there are canvases per class: ``"real"``, random real
    images (1x1 canvases: their crops are the image rolled), and ``"real_tiles"``, canvases tiled with
    real images of their class (the same pixel budget). ``lr`` is the textures' ``syn_lr``; baselines
    train with ``baseline_lr`` (None: ``lr``). ``classes="present"`` tests on the classes the textures
    cover (a K-way task, :func:`mttlib.texture.class_subset`), ``"all"`` on every class, or a list picks
    them. Other keyword arguments are :class:`Recipe` fields. Returns ``{"textures": EvalResult,
    "<baseline>": EvalResult}``. Taught in notebook ``04_tileable_textures``.
    """
    texture.check_texture_data(data)
    if canvases.dim() != 4 or labels.dim() != 1 or canvases.shape[0] != labels.shape[0] or \
            (isinstance(classes, str) and classes not in ("present", "all")):
        raise ValueError(f"need canvases [N, C, H, W], labels [N] and classes 'present', 'all' or a list; got "
                         f"{tuple(canvases.shape)}, {tuple(labels.shape)} and {classes!r}")
    labels = labels.detach().cpu().long()
    wanted = (sorted(set(labels.tolist())) if classes == "present" else None if classes == "all"
              else texture.class_indices(data, classes))
    if wanted is not None and len(wanted) < data.num_classes:
        if missing := sorted(set(labels.tolist()) - set(wanted)):
            raise ValueError(f"the textures have labels {missing} outside classes={list(classes)}")
        data, labels = texture.class_subset(data, wanted), torch.tensor([wanted.index(int(c)) for c in labels])
    counts = torch.bincount(labels, minlength=data.num_classes)
    per_class = int(counts.max())
    if baselines and not bool((counts == per_class).all()):
        raise ValueError(f"baselines need the same number of canvases per class, got counts {counts.tolist()}; "
                         "pass baselines=() to evaluate the textures alone")
    common = dict(recipe, train_transform=texture.crop_transform(data.image_size))
    rate = lr if baseline_lr is None else baseline_lr
    results = {"textures": evaluate_set(canvases.detach(), labels, data, lr=lr, **common)}
    for name in baselines:
        if name == "real":
            results[name] = evaluate_random_real(data, per_class, lr=rate, **common)
        elif name == "real_tiles":
            canvas_size = max(1, canvases.shape[-1] // data.image_size)
            x, y = texture.init_canvases(data, per_class, canvas_size, "real",
                                         torch.Generator().manual_seed(recipe.get("seed", 0)))
            results[name] = evaluate_set(x, y, data, lr=rate, **common)
        else:
            raise ValueError(f"unknown baseline {name!r}; use 'real' or 'real_tiles'")
        results[name].config.update(texture_baseline=name)
    for result in results.values():
        result.config.update(eval_classes=list(data.classes))
    return results

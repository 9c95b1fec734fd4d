"""How good is a distilled set? The ceiling it is measured against, and DD-Ranking's two scores.

A distilled set is compared with random real images of the same size (what distillation must beat,
:func:`mttlib.evaluate.evaluate_random_real`) and with the whole training split (the ceiling).
:func:`evaluate_full_data` trains the ceiling until its test accuracy stops rising and can keep the
result in a cache, since it is the costliest number of a comparison; :func:`ranking_metrics` turns
the three accuracies into IOR and HLR (Li et al. 2025, *DD-Ranking: Rethinking the Evaluation of
Dataset Distillation*). Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from mttlib.data import ImageData
from mttlib.evaluate import EvalResult, Recipe, evaluate_runs
from mttlib.io import cached
from mttlib.train import History, accuracy, pick_device

__all__ = ["plateau_schedule", "evaluate_full_data", "SAME_RECIPE", "ranking_metrics"]

# what two evaluations must share to be compared (the learning rate may differ: a set brings its own)
SAME_RECIPE = ("dataset", "zca", "model", "model_kwargs", "eval_on", "eval_size", "batch_size", "momentum",
               "weight_decay", "lr_decay", "dsa", "train_transform")


class _Plateau(Exception):
    """Raised by the epoch hook to leave :func:`mttlib.train.train` once test accuracy has plateaued."""


def plateau_schedule(r: Recipe, patience: int) -> Callable[..., tuple[History, list[float]]]:
    """Train at the constant ``r.lr`` while test accuracy, checked after every epoch, beats its best; after
    ``patience`` epochs without a new best (or after ``r.epochs - patience`` epochs), drop the lr x0.1 (with
    ``r.lr_decay``; a fresh optimiser, like the recipe's drop at half-time) for a tail of ``patience`` epochs.

    The accuracy reported is the last one, after the tail, never the best of the curve (the maximum of a
    noisy test curve is optimistic). The losses of the constant phase stay inside the loop when it stops
    early; the test curve covers every epoch. A ``schedule`` for :func:`mttlib.evaluate.evaluate_runs`.
    """
    def schedule(fit: Callable[..., History], x_test: Tensor, y_test: Tensor) -> tuple[History, list[float]]:
        curve: list[float] = []

        def record(stop: bool) -> Callable:
            def hook(epoch: int, net: Any, optimizer: Any) -> None:
                curve.append(accuracy(net, x_test, y_test)[0])
                if stop and len(curve) - 1 - curve.index(max(curve)) >= patience:
                    raise _Plateau  # no new best for `patience` epochs
            return hook

        try:
            head = fit(epochs=r.epochs - patience, lr=r.lr, on_epoch_end=record(True))
        except _Plateau:
            head = History(lr=[r.lr] * len(curve))
        if head.diverged:
            return head, curve
        tail = fit(epochs=patience, lr=r.lr * 0.1 if r.lr_decay else r.lr, on_epoch_end=record(False))
        return History(head.train_loss + tail.train_loss, head.train_acc + tail.train_acc, head.lr + tail.lr,
                       tail.diverged), curve
    return schedule


def evaluate_full_data(data: ImageData, *, epochs: int, patience: int | None = None, num_runs: int = 1,
                       cache: str | Path | None = None, **recipe: Any) -> EvalResult:
    """The *whole training split* under the same recipe: the ceiling a distilled set is measured against.

    An epoch of the full split is hundreds of SGD steps, so a few dozen epochs do. ``patience=None`` runs
    the recipe's fixed schedule for ``epochs``; a number stops each network on a plateau
    (:func:`plateau_schedule`) after at most ``epochs``. ``config["epochs_trained"]`` says how long each
    trained, ``runs[k].test_curve`` shows the plateau. The stop looks at the test set: fair for a reference
    that has no paper length, not for choosing a distilled set. ``cache``: a folder keeping the result for
    any later call with the same data and recipe (notebook 05 reuses notebook 02's); a recipe holding
    objects (a DSA, a transform, an eval set) is not cached. Other keywords are :class:`Recipe` fields.
    """
    r = Recipe(epochs=epochs, num_runs=num_runs, **recipe)
    if patience is not None and not (isinstance(patience, int) and 0 < patience < epochs):
        raise ValueError(f"patience must be None or a number of epochs in 1..{epochs - 1}, got {patience!r}")

    def run() -> EvalResult:
        schedule = None if patience is None else plateau_schedule(r, patience)
        result = evaluate_runs(lambda k: data.train_tensors(pick_device(r.device)), data, r, True, schedule)
        result.config.update(baseline="full", patience=patience)
        return result

    fields = {**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}, "progress": None, "compile": None,
              "device": str(pick_device(r.device)), "patience": patience}  # compiled or not: the same training
    try:
        key = json.dumps(["full-data-v1", data.describe(), fields], sort_keys=True)
    except TypeError:  # objects have no stable description
        cache = None
    if cache is None:
        return run()
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return EvalResult.from_dict(cached(cache, f"full-data-{data.name}-{r.model}", digest,
                                       lambda: run().to_dict(runs=True), EvalResult.from_dict))


def ranking_metrics(distilled: EvalResult, random_real: EvalResult, full: EvalResult) -> dict[str, float]:
    """DD-Ranking's hard-label scores, as fractions: ``ior = acc(distilled) - acc(random real)``, the
    improvement over random real images of the same size and recipe (higher is better), and
    ``hlr = acc(full data) - acc(distilled)``, the accuracy of the full data that the distilled images do
    not recover with hard labels (lower is better). Each pair must share :data:`SAME_RECIPE` (random real
    also the epochs and the number of images), else ``ValueError``. Notebook ``02_trajectory_matching``.
    """
    for name, other, baseline, more in (("random real", random_real, "random-real", ("epochs", "num_images")),
                                        ("full data", full, "full", ())):
        if other.config.get("baseline") != baseline:
            raise ValueError(f"the {name} result must come from evaluate_{name.replace(' ', '_')}; got one with "
                             f"baseline {other.config.get('baseline')!r}")
        differ = [f"{k} {distilled.config.get(k)!r} vs {other.config.get(k)!r}" for k in SAME_RECIPE + more
                  if distilled.config.get(k) != other.config.get(k)]
        if differ:
            raise ValueError(f"the distilled set and the {name} were evaluated differently: {', '.join(differ)}")
    if "soft" in (distilled.labels, random_real.labels):
        raise ValueError("IOR and HLR are hard-label scores: evaluate the distilled set with its hard labels")
    return {"ior": distilled.mean - random_real.mean, "hlr": full.mean - distilled.mean,
            "distilled": distilled.mean, "random_real": random_real.mean, "full": full.mean}

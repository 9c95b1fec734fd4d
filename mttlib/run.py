"""A distillation run on disk: the loop of :class:`mttlib.distill.Distiller` in a folder that
survives being killed. :func:`distill` writes ``config.json``, ``metrics.jsonl`` (a line per
iteration), ``checkpoint.pt`` (all that is needed to continue bit for bit), ``distilled.pt``
(images, labels, the learned ``syn_lr``, the configuration) and ``snapshots/`` for the animation,
each atomically; ``resume=True`` continues a killed run and ends where an uninterrupted one
would. Taught in notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mttlib import __version__
from mttlib.data import ImageData
from mttlib.distill import DistillationDiverged, DistillConfig, Distiller, run_seeds
from mttlib.io import CorruptFileError, atomic_save, atomic_write_json, atomic_write_text, describe, safe_load
from mttlib.matching import BatchSource
from mttlib.trajectory import Trajectory
from mttlib.zca import RECIPE as ZCA_RECIPE
from mttlib.zca import check_recipe

__all__ = ["DistillResult", "distill", "check_distilled", "load_distilled", "load_snapshots", "DISTILLED_FORMAT"]

DISTILLED_FORMAT = "mttlib.distill.distilled/1"


@dataclass
class DistillResult:
    """What a run produced: the synthetic set, its learned step size, metrics and the folder."""
    images: Tensor
    labels: Tensor
    syn_lr: float
    metrics: list[dict[str, Any]]
    config: DistillConfig
    out_dir: Path | None = None
    soft_labels: Tensor | None = None  # [N, classes] probabilities, when the run used soft labels
    label_logits: Tensor | None = None  # their logits (soft_labels = softmax(label_logits))
    images_ema: Tensor | None = None  # the moving average of the images, when ema_decay was set


def _distilled(run: Distiller) -> dict[str, Any]:
    out = {"format": DISTILLED_FORMAT, "images": run.images.detach().cpu().clone(), "labels": run.labels.cpu().clone(),
           "syn_lr": float(run.syn_lr.detach()), "iteration": run.iteration, "config": run.config.to_dict(),
           **run.extras.outputs()}
    if run.config.zca:  # which whitening the images live in (loading refuses another)
        out["zca_recipe"] = ZCA_RECIPE
    return out


def _snapshot(run: Distiller, out: Path) -> None:
    # half precision halves the files of an animation; it is for display, not for resuming
    atomic_save({"iteration": run.iteration, "images": run.images.detach().cpu().half(), "labels": run.labels.cpu(),
                 "syn_lr": float(run.syn_lr.detach())}, out / "snapshots" / f"iter_{run.iteration:06d}.pt")


def _check_resumable(saved: dict[str, Any], config: DistillConfig, ckpt: Path | str) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig) if f.default is not dataclasses.MISSING}
    now = config.to_dict()  # a field the saved run did not have yet had its default
    differ = [f"{k}: {saved.get(k, defaults.get(k))!r} -> {now[k]!r}" for k in now
              if k not in DistillConfig.TUNABLE and saved.get(k, defaults.get(k)) != now[k]]
    if differ:
        raise ValueError(f"cannot resume {ckpt}: the run was made with a different configuration ({'; '.join(differ)})."
                         f" Resume with the same settings (only {', '.join(DistillConfig.TUNABLE)} may change), or "
                         "start a new run in another folder.")


def _start_folder(run: Distiller, out: Path, resume: bool, data: ImageData, experts: Sequence[Trajectory],
                  extra_config: dict | None) -> None:
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{out} already holds a distillation run (checkpoint.pt). Pass resume=True "
                              "(--resume) to continue it, or choose another output folder.")
    made_from = json.loads(json.dumps({"count": len(experts), "epochs": [t.epochs for t in experts],
                                       "config": experts[0].meta.get("config")}))  # as config.json holds it
    if resume and ckpt.exists():
        state = safe_load(ckpt)
        _check_resumable(state["config"], run.config, ckpt)
        saved = json.loads((out / "config.json").read_text()).get("experts") if (out / "config.json").exists() else None
        if saved is not None and saved != made_from:
            raise ValueError(f"cannot resume {ckpt}: the run was made from other experts ({saved['count']} of "
                             f"{saved['epochs'][0]} epochs, now {len(experts)} of {experts[0].epochs}, or another "
                             "expert recipe). Resume with the same experts, or start a new run in another folder.")
        run.load_state_dict(state)
    record = {"config": run.config.to_dict(), "data": data.describe(), "experts": made_from,
              "seeds": {**run_seeds(run.config.seed), "seed": run.config.seed}, "device": str(run.device),
              "strategy": run.strategy, "batch_source": repr(run.source), **(extra_config or {}),
              "versions": {"mttlib": __version__, "torch": torch.__version__, "python": platform.python_version()}}
    if run.iteration:
        record["resumed_from_iteration"] = run.iteration
    atomic_write_json(record, out / "config.json")
    # metrics.jsonl holds exactly the iterations of the state we continue from
    atomic_write_text("".join(json.dumps(m) + "\n" for m in run.metrics), out / "metrics.jsonl")
    if run.iteration == 0:
        _snapshot(run, out)


def distill(config: DistillConfig, experts: Sequence[Trajectory], data: ImageData, out_dir: str | Path | None, *,
            device: str | torch.device | None = "auto", resume: bool = False, progress: bool = True,
            source: BatchSource | None = None, init: tuple[Tensor, Tensor] | None = None,
            callback: Callable[[dict[str, Any]], None] | None = None,
            extra_config: dict | None = None) -> DistillResult:
    """Run (or continue, with ``resume``) a distillation in the run folder ``out_dir`` (None: no files).

    Without ``resume`` an existing checkpoint is an error: no run is overwritten by accident. A
    divergence raises :class:`mttlib.distill.DistillationDiverged` and keeps the last good
    checkpoint. ``callback(metrics)`` runs after every iteration.
    """
    out = Path(out_dir) if out_dir is not None else None
    run = Distiller(config, experts, data, device=device, source=source, init=init)
    if out is not None:
        _start_folder(run, out, resume, data, experts, extra_config)
    bar = tqdm(total=config.iterations, initial=run.iteration, desc="distill", unit="it", dynamic_ncols=True) \
        if progress else None
    try:
        while run.iteration < config.iterations:
            try:
                m = run.step()
            except DistillationDiverged as err:
                ckpt = None if out is None else out / "checkpoint.pt"
                kept = (f" The last good checkpoint ({ckpt}, iteration {int(safe_load(ckpt)['iteration'])}) is kept: "
                        "lower the learning rate and continue it with resume=True (--resume).") \
                    if ckpt is not None and ckpt.exists() else ""
                raise DistillationDiverged(f"{err}{kept}") from None
            if out is not None:
                with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(m) + "\n")
                last = run.iteration == config.iterations
                if run.iteration % config.snapshot_every == 0 or last:
                    _snapshot(run, out)
                if run.iteration % config.checkpoint_every == 0 or last:
                    atomic_save(run.state_dict(), out / "checkpoint.pt")
                    atomic_save(_distilled(run), out / "distilled.pt")
            if bar is not None:
                bar.set_postfix(loss=f"{m['loss']:.4f}", syn_lr=f"{m['syn_lr']:.4g}", refresh=False)
                bar.update(1)
            if callback is not None:
                callback(m)
    finally:
        if bar is not None:
            bar.close()
    # what the library hands back is on the CPU, as in the files, whatever device the run used
    return DistillResult(images=run.images.detach().cpu().clone(), labels=run.labels.cpu().clone(),
                         syn_lr=float(run.syn_lr.detach()), metrics=list(run.metrics), config=config, out_dir=out,
                         **run.extras.outputs())


def _set_problem(d: dict[str, Any]) -> str | None:
    """What keeps ``d`` from being a synthetic set as :func:`distill` writes it (None: nothing)."""
    images, labels, n = d["images"], d["labels"], len(d["images"]) if isinstance(d["images"], Tensor) else 0
    if not (isinstance(images, Tensor) and images.is_floating_point() and images.dim() == 4 and n):
        return f"images must be a float tensor [N, C, H, W], it holds {describe(images)}"
    if not bool(torch.isfinite(images).all()):
        return "its images hold NaN or infinite values"
    if not (isinstance(labels, Tensor) and labels.dtype == torch.long and tuple(labels.shape) == (n,)):
        return f"labels must be int64 class indices [{n}] (one per image), it holds {describe(labels)}"
    soft = [d[k] for k in ("soft_labels", "label_logits") if d.get(k) is not None]
    if any(not (isinstance(t, Tensor) and t.is_floating_point() and t.dim() == 2 and t.shape[0] == n
                and t.shape[1] == soft[0].shape[1] > 0) for t in soft):
        return f"soft_labels and label_logits must be float [{n}, classes], it holds {', '.join(map(_describe, soft))}"
    top = soft[0].shape[1] - 1 if soft else None  # without soft labels the class count is the dataset's
    if labels.min() < 0 or (top is not None and labels.max() > top):
        allowed = "0 or more" if top is None else f"0..{top}, the soft labels' classes"
        return f"labels must be class indices ({allowed}), they run {int(labels.min())}..{int(labels.max())}"
    ema = d.get("images_ema")
    if ema is not None and not (isinstance(ema, Tensor) and ema.is_floating_point() and ema.shape == images.shape):
        return f"images_ema must be float like the images {list(images.shape)}, it holds {describe(ema)}"
    lr = d.get("syn_lr")
    lr = lr.item() if isinstance(lr, Tensor) and lr.dim() == 0 and lr.is_floating_point() else lr
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf):
        return f"syn_lr must be one positive finite number, it holds {describe(lr)}"
    if d.get("config") is not None and not isinstance(d["config"], dict):
        return f"config must be a dict, it holds {describe(d['config'])}"
    return None


def check_distilled(d: Any, path: Path, what: str = "distilled set",
                    command: str = "python -m mttlib distill") -> dict[str, Any]:
    """``d`` as read from ``path`` if it is a synthetic set as the kit writes it, else a one-line
    :class:`CorruptFileError` saying what is wrong and that ``command`` re-creates it.

    A set holds float images [N, C, H, W], int64 ``labels`` [N] (class indices), and may hold float
    ``soft_labels``/``label_logits`` [N, classes], ``images_ema`` like the images, a positive ``syn_lr``
    (returned as a float) and a ``config`` dict.
    """
    is_set = isinstance(d, dict) and {"images", "labels"} <= set(d)
    problem = _set_problem(d) if is_set else "it is not a dict with images and labels"
    if problem is not None:
        raise CorruptFileError(f"{path} is not a {what} as the kit writes it: {problem}. Re-create it with "
                               f"`{command}`.")
    if d.get("syn_lr") is not None:
        d["syn_lr"] = float(d["syn_lr"])
    return d


def load_distilled(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a distilled set (``distilled.pt``, or a run folder): ``images``, ``labels``, ``syn_lr``, ``config``.

    A file that is not a set as :func:`check_distilled` describes it is refused, and so is a set
    distilled on ZCA data of another whitening than today's (:mod:`mttlib.zca`).
    """
    path = Path(path) / "distilled.pt" if Path(path).is_dir() else Path(path)
    d = check_distilled(safe_load(path, map_location=device), path)
    if (d.get("config") or {}).get("zca"):
        check_recipe({"recipe": d.get("zca_recipe")}, str(path))
    return d


def load_snapshots(run_dir: str | Path) -> list[tuple[int, Tensor]]:
    """The run's image snapshots ``[(iteration, images float32), ...]`` in iteration order."""
    folder = Path(run_dir)
    folder = folder / "snapshots" if (folder / "snapshots").is_dir() else folder
    files = sorted(folder.glob("iter_*.pt"))
    if not files:
        raise FileNotFoundError(f"no snapshots (iter_NNNNNN.pt) in {folder}; a distillation run writes them every "
                                "snapshot_every iterations")
    snaps = [safe_load(f) for f in files]
    for f, d in zip(files, snaps):  # an animation needs every frame numbered, and all of one shape
        step, images = (d.get("iteration"), d.get("images")) if isinstance(d, dict) else (None, None)
        if type(step) is not int or step < 0 or not (isinstance(images, Tensor) and images.is_floating_point()
                                                     and images.dim() == 4):
            raise CorruptFileError(f"{f} is not a distillation snapshot (a whole iteration number and float images "
                                   f"[N, C, H, W]): it holds iteration {describe(step)} and images "
                                   f"{describe(images)}. Move it out of {folder}.")
        if images.shape != snaps[0]["images"].shape:
            raise CorruptFileError(f"{f} holds images {list(images.shape)} but {files[0].name} holds "
                                   f"{list(snaps[0]['images'].shape)}: a snapshot of another run? Move it out of "
                                   f"{folder}.")
    return [(d["iteration"], d["images"].float()) for d in snaps]

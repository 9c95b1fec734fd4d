"""The kit's command line, ``python -m mttlib <command>``: every command in one place. Flags of the
configuration dataclasses come from their fields (a new field is a new ``--flag``); one handler turns
every user mistake into one line ``error: ...`` and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

import torch

from mttlib import demo, distill, evaluate, experts, memory, ranking, released, reproduce, run, texture, trajectory, viz
from mttlib.data import EMBEDDED_DATASET, dataset_names, load_dataset
from mttlib.models import make_model
from mttlib.io import CorruptFileError, runs_dir
from mttlib.presets import SIZES, followup_overrides, get_preset
from mttlib.train import pick_device

USER_ERRORS = (OSError, ValueError, KeyError, CorruptFileError, distill.DistillationDiverged, FloatingPointError)


# --- flags from dataclass fields -----------------------------------------------------------------


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), *,
                     aliases: dict[str, tuple[str, ...]] | None = None, title: str = "configuration",
                     unset: str = "the preset's", note: str | None = None) -> None:
    """One ``--field-name`` per dataclass field (``--x/--no-x`` for booleans, ``--x 1 10`` for tuples), dest = the
    field, left at None when not given: the value comes from elsewhere (``unset`` says where, ``note`` adds more, once
    for the group); a field's ``metadata["help"]`` replaces its help."""
    group = parser.add_argument_group(title, note)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.isupper():
            continue
        names = (f"--{f.name.replace('_', '-')}", *(aliases or {}).get(f.name, ()))
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # int | None -> int
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        many, text = typing.get_origin(kind) is tuple, f.metadata.get("help", f"{f.name} (default {unset})")
        kind = typing.get_args(kind)[0] if many else kind if kind in (bool, int, float, str) else json.loads  # dicts
        if kind is bool:
            group.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(*names, dest=f.name, type=kind, help=text, nargs="+" if many else None,
                               metavar="JSON" if kind is json.loads else kind.__name__.upper())


def config_values(args: argparse.Namespace, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields given on the command line (flags left at None are omitted)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


# --- data and experts ----------------------------------------------------------------------------


def _data(args: argparse.Namespace) -> int:
    data = None if args.list else load_dataset(args.name, args.data_root, zca=args.zca, download=args.download)
    print("\n".join(dataset_names()) if args.list else json.dumps(data.describe(), indent=2))
    return 0


def _preset(args: argparse.Namespace) -> tuple[Any, Any]:
    """The data (not whitened) and the preset of --dataset, --ipc, --preset and --like (None without --preset)."""
    _need(args.preset or not args.like, "--like needs --preset")
    data = load_dataset(args.dataset, args.data_root)
    return data, args.preset and get_preset(args.dataset, args.ipc, args.preset, data=data, like=args.like)


def _experts(args: argparse.Namespace) -> int:
    data, preset = _preset(args)
    base = experts.ExpertConfig.from_preset(preset, dataset=data.name) if preset else experts.ExpertConfig(data.name)
    values = config_values(args, experts.ExpertConfig, skip=("dataset",))
    values["model_kwargs"] = {**base.model_kwargs, **values.get("model_kwargs", {}),
                              **{k: getattr(args, k) for k in ("width", "depth") if getattr(args, k) is not None}}
    config = experts.ExpertConfig(**{**base.to_dict(), **values})
    data = load_dataset(args.dataset, args.data_root, zca=True) if config.zca else data
    out_dir = Path(args.out) if args.out else experts.expert_dir(args.runs, config)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    count = args.num_experts or (preset.num_experts if preset else 5)
    mine = [k for k in range(count) if k % world == rank and not experts.expert_path(out_dir, k).exists()]
    who = f"rank {rank} of {world}: " if world > 1 else ""
    print(f"{who}training experts {mine} into {out_dir}" if mine else f"{who}no experts to train in {out_dir}",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    paths = experts.train_experts(data, config, count, out_dir, device=args.device, progress=not args.no_progress)
    if rank == 0:
        metas = [trajectory.load_trajectory(p).meta for p in paths]
        print(f"{'expert':>8} {'train acc':>10} {'test acc':>9} {'seconds':>8}")
        for m in metas:
            print(f"{m['index']:>8} {m['train_acc'][-1]:>10.4f} {m['test_acc'][-1]:>9.4f} {m['wall_time_s']:>8.1f}")
        final = torch.tensor([m["test_acc"][-1] for m in metas], dtype=torch.float64)
        print(f"{len(metas)} experts of {metas[0]['epochs']} epochs in {out_dir}; final test accuracy "
              f"{final.mean():.4f} +- {final.std(correction=0):.4f}\ndone in {time.perf_counter() - start:.1f} s")
    return 0


# --- distillation --------------------------------------------------------------------------------


def _load_experts_for(args: argparse.Namespace, preset: Any, data: Any, zca: bool) -> tuple[Path, list]:
    path = Path(args.experts) if args.experts else experts.expert_dir(
        args.runs, experts.ExpertConfig.from_preset(preset, dataset=data.name, zca=zca))
    return path, experts.load_experts(path)  # a missing folder's error says how to train the experts


def _distill(args: argparse.Namespace) -> int:
    data, preset = _preset(args)
    changes = {**followup_overrides(args.followup, preset),
               **config_values(args, distill.DistillConfig, skip=("dataset", "ipc", "preset"))}
    config = distill.DistillConfig.from_preset(preset, **changes).replace(dataset=data.name)
    device = pick_device(args.device)
    data = load_dataset(args.dataset, args.data_root, zca=True) if config.zca else data
    experts_path, trajectories = _load_experts_for(args, preset, data, config.zca)
    out = Path(args.out) if args.out else runs_dir(args.runs) / "distill" / (
        f"{data.name}-ipc{args.ipc}-{args.preset}".replace(":", "_").replace("/", "_"))
    print(f"distilling {args.dataset} at ipc {config.ipc} ({preset.name}) from {len(trajectories)} experts in "
          f"{experts_path} into {out} on {device}")
    model = make_model(config.model, data.channels, data.num_classes, data.image_size, **config.model_kwargs)
    print(memory.report(model.to(device), (data.channels, data.image_size, data.image_size),
                        data.num_classes * config.ipc, config.batch_syn, config.syn_steps, config.strategy))
    if device.type == "cpu" and args.keep_freed_memory:
        memory.keep_freed_memory()  # this process only distils: trade returned memory for speed
    result = run.distill(config, trajectories, data, out, device=device, resume=args.resume,
                         progress=not args.no_progress)
    print(f"done: {len(result.images)} images, learned syn_lr {result.syn_lr:.5g}, final loss "
          f"{result.metrics[-1]['loss']:.4f}; distilled set in {out / 'distilled.pt'}")
    if args.gif:
        print(f"animation: {viz.distillation_gif(out, data, out / 'distillation.gif')}")
    return 0


# --- evaluation ----------------------------------------------------------------------------------


def _need(ok: Any, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _evaluate_source(args: argparse.Namespace) -> dict[str, Any]:
    """What to evaluate: dataset name, zca, lr, the set file's contents (None for the others), a description."""
    released_given = args.released_images is not None or args.released_labels is not None
    _need((args.set is not None) + released_given + (args.baseline is not None) == 1,
          "give exactly one of --set, --released-images/--released-labels, --baseline")
    if args.set is not None:
        blob = run.load_distilled(args.set)
        config = blob.get("config") or {}
        _need(not (args.dataset and config.get("dataset") and args.dataset != config["dataset"]),
              f"the set was distilled on {config.get('dataset')!r} but --dataset is {args.dataset!r}")
        _need(args.dataset or config.get("dataset"), f"{args.set} does not name its dataset; pass --dataset")
        _need(not (args.zca and config.get("zca") is False), f"{args.set} was distilled without ZCA; drop --zca")
        lr = args.lr if args.lr is not None else blob.get("syn_lr")
        _need(lr is not None, f"{args.set} holds no syn_lr; pass --lr")
        for flag, key in (("ema", "images_ema"), ("soft_labels", "soft_labels")):
            _need(not getattr(args, flag) or blob.get(key) is not None, f"{args.set} holds no {key} (distill with "
                  f"{'ema_decay' if flag == 'ema' else 'soft_labels fixed or learn'} to keep them)")
        return {"name": args.dataset or config["dataset"], "zca": bool(config.get("zca", args.zca)), "lr": lr,
                "blob": blob, "info": {"mode": "set", "path": str(args.set), "images": "ema" if args.ema else "raw",
                                       "labels": "hard and soft" if args.soft_labels else "hard"}}
    _need(args.dataset, "--dataset is needed for released tensors and baselines")
    if released_given:
        _need(args.released_images and args.released_labels and args.lr, "released tensors need --released-images, "
              "--released-labels, --lr and --dataset (add --zca if they were distilled with ZCA)")
        return {"name": args.dataset, "zca": args.zca, "lr": args.lr, "blob": None, "info": {
            "mode": "released", "images": str(args.released_images), "labels": str(args.released_labels)}}
    _need(args.baseline != "random-real" or args.ipc, "--baseline random-real needs --ipc N")
    return {"name": args.dataset, "zca": args.zca, "lr": args.lr if args.lr is not None else 0.01, "blob": None,
            "info": {"mode": f"baseline-{args.baseline}"}}


def _evaluate(args: argparse.Namespace) -> int:
    src = _evaluate_source(args)
    info, blob, lr = src["info"], src["blob"], src["lr"]
    full = args.baseline == "full"
    common = {"epochs": 40 if full else evaluate.PAPER_EPOCHS, "num_runs": 1 if full else 5,
              **config_values(args, evaluate.Recipe, skip=("model", "device", "progress")),
              "lr": lr, "device": args.device, "progress": not args.no_progress}
    data = load_dataset(src["name"], args.data_root, zca=src["zca"])
    images = labels = None  # baselines draw their own
    if info["mode"] == "released":
        data = released.released_space(data)  # test on what the authors' tensors were made from
        images, labels = released.load_released(args.released_images, args.released_labels, data)
    elif info["mode"] == "set":
        images, labels = blob["images_ema"] if args.ema else blob["images"], blob["labels"]
    results: dict[str, evaluate.EvalResult] = {}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    _need(models, "--models is empty")
    for model in models:
        if info["mode"] == "baseline-random-real":
            results[model] = evaluate.evaluate_random_real(data, args.ipc, model=model, **common)
        elif info["mode"] == "baseline-full":
            results[model] = ranking.evaluate_full_data(data, model=model, patience=min(5, common["epochs"] - 1) or None,
                                                       **common)
        elif info["mode"] == "set" and args.soft_labels:
            both = evaluate.evaluate_soft_and_hard(images, blob["soft_labels"], labels, data, model=model, **common)
            results[model], results[f"{model} (soft labels)"] = both["hard"], both["soft"]
        else:
            results[model] = evaluate.evaluate_set(images, labels, data, model=model, **common)
        if not args.json:
            for key in (k for k in results if k == model or k.startswith(f"{model} (")):
                print(f"{key:<12} {results[key]}", flush=True)
    if args.json:
        print(json.dumps({**info, "dataset": data.name, "zca": src["zca"], "lr": float(lr), "epochs": common["epochs"],
                          "results": {m: r.to_dict() for m, r in results.items()}}))
    return 0


# --- textures -----------------------------------------------------------------------------------


def _texture_distill(args: argparse.Namespace) -> int:
    data, preset = _preset(args)
    overrides = config_values(args, distill.DistillConfig, skip=("dataset", "ipc", "preset", "zca", "init"))
    config = distill.DistillConfig.from_preset(preset, **{**texture.TEXTURE_PRESET_CHANGES[args.preset], **overrides,
                                                          "init": "noise", "zca": False}).replace(dataset=data.name)
    classes = args.classes if args.classes and args.classes.strip() else None
    wanted = texture.class_indices(data, classes)
    experts_path, trajectories = _load_experts_for(args, preset, data, False)
    tag = "all" if classes is None else "-".join(str(c) for c in wanted)
    out = Path(args.out) if args.out else runs_dir(args.runs) / "texture" / (
        f"{data.name}-ipc{args.ipc}-{args.preset}-c{args.canvas_size}-{tag}".replace(":", "_").replace("/", "_"))
    device = pick_device(args.device)
    print(f"distilling {len(wanted)} class(es) of {data.name} into {args.ipc} texture(s) each, canvases "
          f"{args.canvas_size}x the image side{' WITHOUT wrap-around (control)' if args.no_wrap else ''}, from "
          f"{len(trajectories)} experts in {experts_path} into {out} on {device}")
    result = texture.distill_textures(data, trajectories, out, config=config, canvas_size=args.canvas_size,
                                      canvas_samples=args.canvas_samples, init=args.init, classes=wanted,
                                      wrap=not args.no_wrap, device=device, progress=not args.no_progress,
                                      resume=args.resume)
    print(f"done: {len(result.images)} textures, learned syn_lr {result.syn_lr:.5g}, final loss "
          f"{result.metrics[-1]['loss']:.4f}, mean seam ratio {float(texture.seam_ratio(result.images).mean()):.3f} "
          "(about 1: seamless)")
    print(f"texture set: {out / 'distilled.pt'}\nexport PNGs with: python -m mttlib texture export {out}")
    return 0


def _texture_export(args: argparse.Namespace) -> int:
    tex = texture.load_textures(args.set)
    config = tex.get("config") or {}
    meta = tex.get("data") if isinstance(tex.get("data"), dict) else config
    if args.dataset is None and all(k in meta for k in ("mean", "std", "classes")):
        pixels, classes = texture.StoredPixels(meta["mean"], meta["std"]), list(meta["classes"])
    else:
        _need(args.dataset or config.get("dataset"), f"{args.set} does not name its dataset; pass --dataset NAME")
        pixels = load_dataset(args.dataset or config["dataset"], args.data_root, zca=False)
        classes = list(pixels.classes)
    where = Path(args.set)
    out = Path(args.out) if args.out else (where / "png" if where.is_dir() else where.with_name(where.stem + "_png"))
    paths = texture.export_pngs(tex["images"], tex["labels"], classes, pixels, out, args.upscale, args.repeats)
    print(f"wrote {len(paths)} PNGs to {out}")
    return 0


# --- the parser ----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, runs: bool = True, device: bool = True) -> None:
    p.add_argument("--data-root", default=None, help="data root (default $MTT_DATA_ROOT, else <kit>/data)")
    if runs:
        p.add_argument("--runs", default=None, help="runs folder (default runs/ or $MTT_RUNS)")
    if device:
        p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, ...")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_flags(p: argparse.ArgumentParser, what: str, size: str | None = "classroom",
               out: str = "run folder (default: one under the runs folder)") -> None:
    p.add_argument("--dataset", default=EMBEDDED_DATASET, help=f"dataset name (default {EMBEDDED_DATASET})")
    p.add_argument("--ipc", type=int, default=1, help=f"{what} per class (default 1)")
    p.add_argument("--preset", default=size, choices=SIZES, help=f"hyper-parameter size (default {size or 'none'}); "
                   "classroom and smoke exist for any dataset (mttlib.presets.derive_preset)")
    p.add_argument("--like", metavar="NAME", help="borrow dataset NAME's preset for data of its shape (e.g. --preset "
                   "paper --like cifar10 on a folder of CIFAR-10 images)")
    p.add_argument("--out", default=None, help=out)
    if size:  # a distillation: it reads experts and may resume
        p.add_argument("--experts", default=None, help="experts folder (default: the preset's under the runs folder)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m mttlib``: one subcommand per task."""
    debug = argparse.ArgumentParser(add_help=False)  # --debug before or after the command
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback")
    parser = argparse.ArgumentParser(prog="python -m mttlib", parents=[debug],
                                     description="The MTT teaching kit: dataset distillation by trajectory matching.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = sub.add_parser("data", parents=[debug], help="inspect a dataset: sizes, classes, normalisation")
    p.add_argument("name", nargs="?", default=EMBEDDED_DATASET, help="dataset name; 'folder:PATH' for a tree")
    p.add_argument("--zca", action="store_true", help="fit ZCA whitening on the train split")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset if missing")
    p.add_argument("--list", action="store_true", help="list the known dataset names")
    _common(p, runs=False, device=False)
    p.set_defaults(run=_data)

    p = sub.add_parser("experts", parents=[debug], help="train expert trajectories on real data (resumable; "
                       "under `torchrun --nproc-per-node K -m mttlib experts` split over K processes)")
    _run_flags(p, "synthetic images (of the preset whose experts to train)", None,
               "experts folder (default runs/experts/<dataset>-<model>-<hash>)")
    p.add_argument("--num-experts", type=int, help="experts the folder should hold (default: the preset's, else 5)")
    p.add_argument("--width", type=int, default=None, help="network width (model_kwargs)")
    p.add_argument("--depth", type=int, default=None, help="ConvNet depth (model_kwargs)")
    add_config_flags(p, experts.ExpertConfig, skip=("dataset",), aliases={"base_seed": ("--seed",)},
                     title="the recipe (ExpertConfig; the paper's without --preset: SGD lr 0.01, batch 256, DSA, "
                     "50 epochs, ConvNet width 128)", unset="the --preset's, else the paper's")
    p.set_defaults(run=_experts)

    p = sub.add_parser("distill", parents=[debug], help="distill a synthetic set by matching trajectories")
    _run_flags(p, "synthetic images")
    p.add_argument("--gif", action="store_true", help="write distillation.gif from the snapshots at the end")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="on the CPU, keep freed memory for reuse (faster; mttlib.memory.keep_freed_memory)")
    p.add_argument("--followup", action="append", default=[], metavar="NAME",
                   help="a follow-up bundle of mttlib.presets.FOLLOWUPS (tesla, datm-labels, datm-schedule, datm, "
                        "ftd-ema); repeat to combine; single fields given below win over it")
    add_config_flags(p, distill.DistillConfig, skip=("dataset", "ipc", "preset"),
                     title="overrides of the preset (DistillConfig fields)")
    p.set_defaults(run=_distill)

    p = sub.add_parser("evaluate", parents=[debug], help="train fresh networks on a set and report test accuracy")
    p.add_argument("--set", help="a distilled set file (images, labels, syn_lr, config)")
    p.add_argument("--released-images", help="the authors' images_best.pt (with --released-labels, --lr, --dataset)")
    p.add_argument("--released-labels", help="the authors' labels_best.pt")
    p.add_argument("--baseline", choices=("random-real", "full"), help="a real-data baseline (needs --dataset)")
    p.add_argument("--ipc", type=int, help="images per class for --baseline random-real")
    p.add_argument("--dataset", help="dataset name (default: the one in the set file's config)")
    p.add_argument("--zca", action="store_true", help="ZCA-whitened dataset (must match how the set was made)")
    p.add_argument("--models", default="convnet", help="comma-separated architectures, e.g. convnet,alexnet,vgg11")
    add_config_flags(p, evaluate.Recipe, skip=("model", "device", "dsa", "train_transform", "eval_on", "progress"),
                     aliases={"num_runs": ("--runs",)}, title="the recipe (Recipe fields)",
                     unset="the paper's", note="Defaults: the paper's recipe; lr: the set's syn_lr or 0.01; --baseline "
                     "full: at most 40 epochs, lr x0.1 for 5 more after a 5-epoch plateau, 1 run.")
    p.add_argument("--soft-labels", action="store_true", help="also evaluate with the set's soft labels")
    p.add_argument("--ema", action="store_true", help="evaluate the set's moving average of the images")
    p.add_argument("--json", action="store_true", help="print one JSON line with every result")
    _common(p, runs=False)
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("texture", parents=[debug], help="distill tileable textures and export PNGs")
    actions = p.add_subparsers(dest="action", required=True)
    t = actions.add_parser("distill", parents=[debug], help="distill tileable textures (never ZCA)")
    _run_flags(t, "textures")
    t.add_argument("--classes", default=None, help="comma-separated class indices or names (default: all)")
    t.add_argument("--canvas-size", type=int, default=2, help="canvas side in image sides (default 2)")
    t.add_argument("--canvas-samples", type=int, default=1, help="random crops per canvas per step")
    t.add_argument("--init", choices=("mosaic", "real", "noise"), default="mosaic",
                   help="starting canvases: mosaic (photos cross-faded, not in the paper; default), real or noise")
    t.add_argument("--no-wrap", action="store_true", help="control run: crops stay inside the canvas")
    add_config_flags(t, distill.DistillConfig, skip=("dataset", "ipc", "preset", "zca", "init"),
                     title="overrides of the preset (DistillConfig fields)")
    t.set_defaults(run=_texture_distill)
    t = actions.add_parser("export", parents=[debug], help="write tile, tiling and sheet PNGs of a texture set")
    t.add_argument("set", help="a texture run folder or its distilled.pt")
    t.add_argument("--out", default=None, help="output folder (default: <run>/png, or <set>_png beside a file)")
    t.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscale factor (default 4)")
    t.add_argument("--repeats", type=int, default=3, help="tiles per side of the tiling PNG (default 3)")
    t.add_argument("--dataset", default=None, help="dataset name, if the set does not record its normalisation")
    _common(t, runs=False, device=False)
    t.set_defaults(run=_texture_export)

    p = sub.add_parser("demo", parents=[debug], help="run the notebooks at classroom size and write a report")
    p.add_argument("--out", default=None, help="outputs folder (default outputs/ or $MTT_OUTPUTS)")
    p.add_argument("--runs", default=None, help="experts and runs folder (default runs/ or $MTT_RUNS)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds per notebook")
    p.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these, e.g. 00 01")
    p.set_defaults(run=lambda a: demo.main(a.out, a.runs, a.smoke, a.only))

    p = sub.add_parser("reproduce", parents=[debug], help="the paper's CIFAR-10 table in one command: experts, "
                       "distillation at ipc 1 and 10, evaluation, random real, beside the paper's numbers (resumable)")
    add_config_flags(p, reproduce.Options, skip=("device", "data_root", "progress"), title="reproduce.Options")
    _common(p, runs=False)
    p.set_defaults(run=lambda a: reproduce.main(reproduce.Options(**config_values(a, reproduce.Options),
                                                                  progress=not a.no_progress)))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m mttlib`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as err:
        if getattr(args, "debug", False):
            raise
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print("error:", " ".join(message.split()), file=sys.stderr)  # one line, whatever the message holds
        return 2

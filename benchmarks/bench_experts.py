"""Expert training throughput: ``mttlib.experts.train_experts`` against a plain PyTorch loop.

Both sides train the same network from the same initialisation on the same data with the same
DSA augmentation, batch size and SGD recipe; the plain side is the textbook loop (``model(x)``,
``loss.backward()``, ``optimizer.step()``) plus the same test evaluations the experts record
(the initialisation and after every epoch). A third side, ``plain_train_only``, skips the evaluation. Runs are interleaved
(the order rotates every repeat) so a machine that gets busier or quieter affects all sides alike.

    python benchmarks/bench_experts.py                  # cifar10-mini, ConvNet width 32, 1 epoch x 3 repeats
    python benchmarks/bench_experts.py --width 128 --epochs 2 --device cuda
    python benchmarks/bench_experts.py --variants bf16,compile     # + bfloat16 autocast and torch.compile sides
    python benchmarks/bench_experts.py --eval-ipc 10 --repeats 3    # the evaluation recipe, eager vs compiled

Prints one JSON object: images/s per side (median and every repeat) and the ratio
``mttlib / plain``; the target is a ratio of at least 0.9.

Measured alone on the kit's idle 2-core machine (torch 2.14, 2 threads, width 32, 3 repeats), three runs
of ``--variants bf16,compile`` (the machine's speed itself moved by half between them, so read the ratios):
mttlib 2,026 / 1,378 / 1,406 images/s, plain loop 2,060 / 1,321 / 1,469 (the same final parameters every
time), compiled 1.44x / 1.64x / 1.89x (6-7 s warm-up; final parameters within 2.5e-5), bf16 autocast
0.93x / 1.08x / 1.06x. The first is the current code; the other two still measured the kit's per-epoch
test accuracy under autograd, and the last is from before the ConvNet pooled by pair sums.
``--eval-ipc 10``: 300 epochs on 100 images, compiled 1.52x / 1.73x / 1.74x (13.3 s against 8.8 s in the first);
``--eval-ipc 1`` (before the pooling change): 2.6 s vs 2.0 s (1.31x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from mttlib.augment import DSA
from mttlib.data import ImageData, load_dataset
from mttlib.experts import ExpertConfig, expert_seed, train_experts
from mttlib.train import derive_seed
from mttlib.trajectory import load_trajectory
from mttlib.models import make_model


def subset(data: ImageData, n: int | None) -> ImageData:
    """The first ``n`` train images (all of them when ``n`` is None)."""
    if not n:
        return data
    return ImageData(name=data.name, train_images=data.train_images[:n], train_labels=data.train_labels[:n],
                     test_images=data.test_images, test_labels=data.test_labels, classes=data.classes,
                     mean=data.mean, std=data.std, zca=data.zca, digits=data.digits)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(data: ImageData, config: ExpertConfig, device: torch.device, evaluate: bool) -> torch.Tensor:
    """The recipe as an ordinary training loop over an nn.Module; returns the final parameters.

    It draws the same random numbers as expert 0 (initialisation, batch order, augmentation),
    so it does exactly the same work and ends at the same parameters.
    """
    seed = expert_seed(config.base_seed, 0)
    torch.manual_seed(seed)
    model = make_model(config.model, data.channels, data.num_classes, data.image_size, **config.model_kwargs)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    dsa = DSA(data.dsa_strategy)
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    augment = torch.Generator().manual_seed(derive_seed(seed, "dsa"))
    x, y = data.train_tensors(device)
    xt, yt = data.test_tensors(device)

    def test_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            correct = sum((model(xt[i:i + 1024]).argmax(1) == yt[i:i + 1024]).sum().item()
                          for i in range(0, len(xt), 1024))
        return correct / len(xt)

    if evaluate:
        test_accuracy()  # the experts record the accuracy of the initialisation too
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=shuffle).to(device)
        for i in range(0, len(x), config.batch_size):
            idx = order[i:i + config.batch_size]
            logits = model(dsa(x[idx], generator=augment))
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if evaluate:
            test_accuracy()
    _sync(device)
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()


def time_evaluation(args: argparse.Namespace) -> dict:
    """The evaluation recipe (``mttlib.evaluate.evaluate_set``: 300 epochs, one network) on ``args.eval_ipc``
    random real images per class, eager against ``compile=True``, rotating the order every repeat."""
    from mttlib.evaluate import evaluate_set, random_real_subset

    data = load_dataset(args.dataset)
    x, y = random_real_subset(data, args.eval_ipc, seed=0)
    recipe = dict(num_runs=1, lr=0.01, epochs=300, model=args.model, model_kwargs={"width": args.width},
                  progress=False, device=args.device)
    seconds: dict[str, list[float]] = {"eager": [], "compile": []}
    accuracy = {}
    for name in seconds:  # warm-up: kernels, and the compiled side's compilation
        evaluate_set(x, y, data, compile=name == "compile", **recipe)
    for r in range(args.repeats):
        for name in (list(seconds) if r % 2 == 0 else list(seconds)[::-1]):
            began = time.perf_counter()
            accuracy[name] = evaluate_set(x, y, data, compile=name == "compile", **recipe).mean
            seconds[name].append(round(time.perf_counter() - began, 2))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {"what": "evaluate_set, 300 epochs, 1 network", "images": len(x), "width": args.width,
            "cpu_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "seconds": seconds,
            "ratio_compile_speed": round(median["eager"] / median["compile"], 3),
            "accuracy": {k: round(v, 4) for k, v in accuracy.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar10-mini")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-images", type=int, default=None, help="use only the first N train images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="", help="comma-separated extra mttlib sides: bf16, compile, "
                        "compile+bf16 (ExpertConfig.precision / .compile); each is warmed up once before timing")
    parser.add_argument("--eval-ipc", type=int, default=0, help="also time the evaluation recipe (300 epochs on "
                        "N random real images per class) eager against compiled, each warmed up once")
    args = parser.parse_args()
    if args.eval_ipc:
        print(json.dumps(time_evaluation(args), indent=2))
        return

    device = torch.device(args.device)
    data = subset(load_dataset(args.dataset), args.train_images)
    config = ExpertConfig(dataset=data.name, model=args.model, model_kwargs={"width": args.width},
                          epochs=args.epochs, batch_size=args.batch_size)
    images = args.epochs * data.train_images.shape[0]

    finals: dict[str, torch.Tensor] = {}

    def run_mttlib() -> None:
        with tempfile.TemporaryDirectory() as out:
            path, = train_experts(data, config, 1, out, device=device, progress=False)
            _sync(device)
            finals["mttlib"] = load_trajectory(path)[-1]

    def run_plain() -> None:
        finals["plain"] = plain_loop(data, config, device, evaluate=True)

    def variant(name: str):
        changes = {"precision": "bf16"} if "bf16" in name else {}
        changes.update({"compile": True} if "compile" in name else {})

        def run() -> None:
            with tempfile.TemporaryDirectory() as out:
                path, = train_experts(data, config.replace(**changes), 1, out, device=device, progress=False)
                _sync(device)
                finals[f"mttlib_{name}"] = load_trajectory(path)[-1]
        return run

    extra = {f"mttlib_{v}": variant(v) for v in filter(None, args.variants.split(","))}
    warmup_s = {}
    for name, run in extra.items():  # a compiled side pays its compilation here, once per process
        began = time.perf_counter()
        run()
        warmup_s[name] = round(time.perf_counter() - began, 1)
    sides = {**extra, "mttlib": run_mttlib,
             "plain": run_plain,
             "plain_train_only": lambda: plain_loop(data, config, device, evaluate=False)}
    plain_loop(subset(data, 2 * args.batch_size), config.replace(epochs=1), device, True)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            wall, proc = time.perf_counter(), time.process_time()
            sides[name]()
            rates[name].append(images / (time.perf_counter() - wall))
            cpu[name].append(time.process_time() - proc)
    median = {name: statistics.median(v) for name, v in rates.items()}
    # on the CPU both sides must have done the very same computation
    same = bool(torch.equal(finals["mttlib"], finals["plain"]))
    print(json.dumps({
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "dataset": data.name,
        "train_images": data.train_images.shape[0],
        "model": config.model,
        "width": args.width,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "same_final_parameters": same,
        "images_per_s_median": {k: round(v, 1) for k, v in median.items()},
        "images_per_s_runs": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "cpu_seconds_runs": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
        "cpu_seconds_median": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
        "ratio_mttlib_to_plain": round(median["mttlib"] / median["plain"], 3),
        "ratio_to_mttlib": {k: round(median[k] / median["mttlib"], 3) for k in extra},
        "ratio_to_plain": {k: round(median[k] / median["plain"], 3) for k in extra},
        "max_abs_diff_to_mttlib": {k: float((finals[k] - finals["mttlib"]).abs().max()) for k in extra},
        "warmup_s": warmup_s,
        "cpu_ratio_plain_to_mttlib": round(statistics.median(cpu["plain"]) / statistics.median(cpu["mttlib"]), 3),
        "ratio_mttlib_to_plain_train_only": round(median["mttlib"] / median["plain_train_only"], 3),
        "target": "ratio_mttlib_to_plain >= 0.9",
    }, indent=2))


if __name__ == "__main__":
    main()

"""Prepare a copy of ImageNet for the kit: unpack the ILSVRC-2012 archives, sort val/ into wnid folders.

    python scripts/prepare_imagenet_val.py [IMAGENET_FOLDER] [--dry-run]

IMAGENET_FOLDER defaults to ``$MTT_IMAGENET``, else ``<data root>/imagenet``. The kit reads a
val split that is flat (``val/ILSVRC2012_val_00000001.JPEG`` ...) when Kaggle's
``LOC_val_solution.csv`` or torchvision's ``meta.bin`` is there; this script is for the other
cases, and for a copy that is still in its archives:

1. ``ILSVRC2012_img_train.tar`` / ``ILSVRC2012_img_val.tar`` without ``train/`` / ``val/``: unpacked
   with torchvision (hours, about 150 GB; val goes straight into ``val/<wnid>/``). This needs the
   devkit ``ILSVRC2012_devkit_t12.tar.gz`` beside them and scipy.
2. A flat ``val/``: every image moves into ``val/<wnid>/``, the wnid read from Kaggle's
   ``LOC_val_solution.csv``, torchvision's ``meta.bin`` or, failing both, the devkit (which
   torchvision turns into ``meta.bin``; needs scipy). Nothing is copied, so no space is needed.
   ``--dry-run`` only counts what would move.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mttlib.folders import image_files
from mttlib.imagenet import imagenet_path, val_wnids

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
ARCHIVES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar"}


def _devkit_meta(folder: Path) -> None:
    """Let torchvision turn the devkit in ``folder`` into ``folder/meta.bin``."""
    from torchvision.datasets import imagenet as tv_imagenet

    if not (folder / DEVKIT).is_file():
        raise SystemExit(f"{folder / DEVKIT} is missing: download the devkit (Development kit, Task 1 & 2) from "
                         "image-net.org next to the archives, or use Kaggle's LOC_val_solution.csv.")
    tv_imagenet.parse_devkit_archive(str(folder))


def unpack(base: Path) -> list[str]:
    """Unpack the train and val archives in ``base`` whose folder is missing; returns what was unpacked."""
    from torchvision.datasets import imagenet as tv_imagenet

    done = []
    for split, archive in ARCHIVES.items():
        if (base / split).is_dir() or not (base / archive).is_file():
            continue
        if not (base / "meta.bin").is_file():
            _devkit_meta(base)
        print(f"unpacking {base / archive} (this takes a long time) ...", flush=True)
        (tv_imagenet.parse_train_archive if split == "train" else tv_imagenet.parse_val_archive)(str(base))
        done.append(split)
    return done


def sort_val(base: Path, dry_run: bool = False) -> int:
    """Move the flat images of the val split under ``base`` into ``val/<wnid>/``; returns how many (would) move."""
    tree = next((t for t in (base, base / "ILSVRC" / "Data" / "CLS-LOC") if (t / "val").is_dir()), None)
    if tree is None:
        raise SystemExit(f"no val/ folder under {base}: unpack ILSVRC2012_img_val.tar there first.")
    if not image_files(tree / "val"):
        return 0  # already sorted into class folders
    ground_truth = [f / name for f in (tree / "val", tree, base) for name in ("LOC_val_solution.csv", "meta.bin")]
    if not any(path.is_file() for path in ground_truth):
        _devkit_meta(tree)
    wnids, source = val_wnids(tree, base)
    print(f"{len(wnids)} val images to sort by {source}", flush=True)
    for file, wnid in wnids.items():
        if not dry_run:
            (tree / "val" / wnid).mkdir(exist_ok=True)
            os.replace(file, tree / "val" / wnid / file.name)
    return len(wnids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", help="the ImageNet folder (default: $MTT_IMAGENET or data/imagenet)")
    parser.add_argument("--dry-run", action="store_true", help="count the val images that would move, move nothing")
    args = parser.parse_args(argv)
    base = Path(args.folder).expanduser() if args.folder else imagenet_path()
    unpacked = [] if args.dry_run else unpack(base)
    moved = sort_val(base, args.dry_run)
    print(f"{base}: unpacked {', '.join(unpacked) or 'nothing'}; "
          f"{'would move' if args.dry_run else 'moved'} {moved} val images into class folders.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the kit's embedded dataset, ``data/cifar10-mini``, from the CIFAR-10 JPEG archive.

The archive (``cifar10-jpg.tar.gz``) holds all 60,000 CIFAR-10 images as 32x32 JPEG files in
the ImageFolder layout ``<top>/{train,test}/<class>/NNNN.jpg``. This script keeps, for every
class, the first 500 train and the first 100 test images **by sorted file name** (no random
choice, so the subset is the same on every machine and every Python version) and copies their
JPEG bytes unchanged: no decoding and re-encoding, so no second generation of JPEG artifacts.

    python scripts/build_embedded_data.py [path/to/cifar10-jpg.tar.gz]

When a ``.sha256`` file sits beside the archive, the archive is checked against it first. The
new folder is assembled beside the old one and swapped in at the end, so an interrupted build
leaves the previous copy intact.

Only the standard library is used: the script runs before the kit is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

KIT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARCHIVE = KIT_ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DEFAULT_OUT = KIT_ROOT / "data" / "cifar10-mini"
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(archive: Path) -> str | None:
    """Check ``archive`` against ``<archive>.sha256`` when that file exists.

    Returns the verified digest, or ``None`` when there is no ``.sha256`` file to check
    against. Raises ``ValueError`` when the digests differ.
    """
    expected_file = archive.with_name(archive.name + ".sha256")
    if not expected_file.exists():
        return None
    text = expected_file.read_text().split()
    if not text:
        raise ValueError(f"{expected_file} is empty; it should hold the archive's sha256 digest.")
    expected = text[0].lower()
    actual = sha256_of(archive)
    if actual != expected:
        raise ValueError(
            f"{archive} has sha256 {actual}, but {expected_file.name} says {expected}: the archive "
            "is corrupt or a different file. Fetch a fresh copy of the archive."
        )
    return actual


def parse_member(name: str) -> tuple[str, str, str] | None:
    """``(split, class, file)`` for an archive path ``.../<split>/<class>/<file>.jpg``, else ``None``."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3:
        return None
    split, cls, file = parts[-3:]
    if split not in SPLITS or not file.lower().endswith(IMAGE_SUFFIXES):
        return None
    if any(p in ("", ".", "..") or p.startswith(".") for p in (cls, file)):
        return None  # hidden files and anything that could escape the output folder
    return split, cls, file


def select_members(names: list[str], per_class: dict[str, int]) -> dict[str, str]:
    """Choose the subset: map each chosen archive path to its path inside the output folder.

    ``per_class`` gives the number of images per class for each split (e.g.
    ``{"train": 500, "test": 100}``); within each ``<split>/<class>`` the first ones by sorted
    file name are kept. Raises ``ValueError`` when a class has too few images, or when the two
    splits do not share one set of classes.
    """
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for name in names:
        parsed = parse_member(name)
        if parsed is not None:
            split, cls, file = parsed
            groups[(split, cls)].append((file, name))
    classes = {split: sorted(c for s, c in groups if s == split) for split in SPLITS}
    if not classes["train"]:
        raise ValueError("the archive holds no <top>/train/<class>/*.jpg files; is it the CIFAR-10 JPEG archive?")
    if classes["train"] != classes["test"]:
        raise ValueError(f"train classes {classes['train']} differ from test classes {classes['test']}.")
    chosen: dict[str, str] = {}
    for (split, cls), files in sorted(groups.items()):
        wanted = per_class[split]
        if len(files) < wanted:
            raise ValueError(f"{split}/{cls} has {len(files)} images, fewer than the {wanted} asked for.")
        for file, name in sorted(files)[:wanted]:
            chosen[name] = f"{split}/{cls}/{file}"
    return chosen


def build(archive: Path, out: Path, train_per_class: int = 500, test_per_class: int = 100) -> dict:
    """Write the subset of ``archive`` into ``out``; return a summary (counts, bytes, digest)."""
    archive = Path(archive)
    out = Path(out)
    if not archive.exists():
        raise FileNotFoundError(
            f"{archive} does not exist. Pass the path of the CIFAR-10 JPEG archive (cifar10-jpg.tar.gz)."
        )
    digest = verify_archive(archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        chosen = select_members([m.name for m in members],
                                {"train": train_per_class, "test": test_per_class})
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the dataset is for everyone
        try:
            total = 0
            for member in members:  # archive order: one forward pass through the gzip stream
                target = chosen.get(member.name)
                if target is None:
                    continue
                data = tar.extractfile(member).read()
                path = staging / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                total += len(data)
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            if out.exists():
                out.rename(old)
            staging.rename(out)
            if old.exists():
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    classes = sorted({target.split("/")[1] for target in chosen.values()})
    counts = {split: sum(t.startswith(split + "/") for t in chosen.values()) for split in SPLITS}
    return {"archive_sha256": digest, "classes": classes, "counts": counts, "bytes": total}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", nargs="?", type=Path, default=DEFAULT_ARCHIVE,
                        help="the CIFAR-10 JPEG archive (default: shared/data/cifar10-jpg.tar.gz "
                             "beside the kit's folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/cifar10-mini)")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        summary = build(args.archive, args.out, args.train_per_class, args.test_per_class)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    checked = f"sha256 {summary['archive_sha256']} verified" if summary["archive_sha256"] else "no .sha256 file to check"
    print(f"archive: {args.archive.name} ({checked})")
    print(f"wrote {summary['counts']['train']} train + {summary['counts']['test']} test images, "
          f"{len(summary['classes'])} classes, {summary['bytes']:,} bytes "
          f"({summary['bytes'] / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

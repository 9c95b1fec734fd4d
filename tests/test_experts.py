"""Expert trajectories: the recipe against a plain training loop, the file format, seeding,
resuming, and the errors a user can run into. Tiny synthetic data and a tiny ConvNet keep it fast."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from mttlib import experts as ex
from mttlib import trajectory
from mttlib.augment import DSA
from mttlib.data import ImageData
from mttlib.io import CorruptFileError
from mttlib.models import FunctionalModel, make_model
from mttlib.train import derive_seed

SIZE, CLASSES = 8, 3


def tiny_data(n_train: int = 40, n_test: int = 20, seed: int = 0, name: str = "synthetic") -> ImageData:
    g = torch.Generator().manual_seed(seed)
    # class-dependent mean colour, so there is something to learn
    def split(n):
        labels = torch.arange(n) % CLASSES
        base = (labels.view(-1, 1, 1, 1).float() * 80 + 20).expand(n, 3, SIZE, SIZE)
        noise = torch.randint(-20, 21, (n, 3, SIZE, SIZE), generator=g).float()
        return (base + noise).clamp(0, 255).to(torch.uint8), labels
    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    return ImageData(name=name, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
                     classes=[f"c{i}" for i in range(CLASSES)], mean=(0.4, 0.4, 0.4), std=(0.3, 0.3, 0.3))


def tiny_config(**changes) -> ex.ExpertConfig:
    base = dict(dataset="synthetic", model="convnet", model_kwargs={"width": 4, "depth": 2}, epochs=2,
                batch_size=16)
    base.update(changes)
    return ex.ExpertConfig(**base)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def _train(data, config, n, out):
    return ex.train_experts(data, config, n, out, device="cpu", progress=False)


def plain_loop(data: ImageData, config: ex.ExpertConfig, index: int) -> torch.Tensor:
    """The recipe written out as an ordinary nn.Module training loop; returns [E + 1, P] snapshots."""
    seed = ex.expert_seed(config.base_seed, index)
    torch.manual_seed(seed)
    model = make_model(config.model, data.channels, data.num_classes, data.image_size, **config.model_kwargs)
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    augment = torch.Generator().manual_seed(derive_seed(seed, "dsa"))
    dsa = DSA(data.dsa_strategy)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    x, y = data.train_tensors()
    snaps = [torch.cat([p.detach().flatten() for p in model.parameters()])]
    for epoch in range(config.epochs):
        if config.lr_decay and epoch == config.epochs // 2:  # as the paper's code: a fresh optimiser
            opt = torch.optim.SGD(model.parameters(), lr=config.lr / 10, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        order = torch.randperm(len(x), generator=shuffle)
        for i in range(0, len(x), config.batch_size):
            xb, yb = x[order[i:i + config.batch_size]], y[order[i:i + config.batch_size]]
            xb = dsa(xb, generator=augment)
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        snaps.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return torch.stack(snaps)


# --------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize("changes", [{}, {"momentum": 0.9, "weight_decay": 5e-4, "lr_decay": True, "epochs": 4,
                                          "lr": 0.05}], ids=["paper", "momentum-wd-decay"])
def test_trajectory_equals_a_plain_training_loop(data, tmp_path, changes):
    config = tiny_config(**changes)
    _train(data, config, 2, tmp_path)
    for k, traj in enumerate(ex.load_experts(tmp_path, config)):
        expected = plain_loop(data, config, k)
        assert traj.snapshots.shape == expected.shape
        assert torch.equal(traj.snapshots, expected), f"expert {k} differs from the plain SGD loop"


def test_test_accuracy_is_that_of_the_saved_snapshots(data, tmp_path):
    config = tiny_config(epochs=3, lr=0.1)
    _train(data, config, 1, tmp_path)
    traj = ex.load_experts(tmp_path)[0]
    model = make_model("convnet", 3, CLASSES, SIZE, width=4, depth=2).eval()
    fm = FunctionalModel(model)
    x, y = data.test_tensors()
    accs = []
    for epoch in range(1, traj.epochs + 1):
        fm.load_(traj[epoch])
        accs.append((model(x).argmax(1) == y).double().mean().item())
    assert traj.test_acc == pytest.approx(accs, abs=1e-9)
    assert len(traj.train_acc) == traj.epochs and all(0 <= a <= 1 for a in traj.train_acc)
    assert traj.test_acc[-1] > 0.5, "a working loop learns the colour-coded classes"


# --------------------------------------------------------------------------- the file format


def test_file_format(data, tmp_path):
    config = tiny_config(epochs=3)
    paths = _train(data, config, 2, tmp_path)
    assert [p.name for p in paths] == ["expert_00000.pt", "expert_00001.pt"]
    raw = torch.load(paths[1], weights_only=True)  # plain tensors and values only
    assert set(raw) == {"snapshots", "meta"}
    numel = FunctionalModel(make_model("convnet", 3, CLASSES, SIZE, width=4, depth=2)).numel
    assert raw["snapshots"].dtype == torch.float32 and raw["snapshots"].shape == (4, numel)
    meta = raw["meta"]
    json.dumps(meta)  # JSON-able
    assert meta["format"] == "mttlib-expert" and meta["format_version"] == trajectory.FORMAT_VERSION
    assert meta["index"] == 1 and meta["seed"] == ex.expert_seed(0, 1)
    assert meta["config"] == config.to_dict() and meta["fingerprint"] == config.fingerprint()
    assert meta["model"] == "convnet" and meta["model_kwargs"] == {"depth": 2, "width": 4}
    assert meta["dataset"] == json.loads(json.dumps(data.describe()))
    assert meta["numel"] == numel and meta["epochs"] == 3
    for key in ("train_acc", "train_loss", "test_acc", "test_loss"):
        assert len(meta[key]) == 3 and all(isinstance(v, float) for v in meta[key])
    assert meta["dsa"]["strategy"] == data.dsa_strategy
    assert meta["wall_time_s"] > 0 and meta["versions"]["torch"] == str(torch.__version__)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["config"] == config.to_dict() and record["fingerprint"] == config.fingerprint()
    assert record["format_version"] == trajectory.FORMAT_VERSION
    assert trajectory.load_trajectory(paths[1]).meta == meta


def test_initial_snapshot_is_the_seeded_model(data, tmp_path):
    config = tiny_config(base_seed=7)
    _train(data, config, 2, tmp_path)
    for k, traj in enumerate(ex.load_experts(tmp_path)):
        torch.manual_seed(ex.expert_seed(7, k))
        model = make_model("convnet", 3, CLASSES, SIZE, width=4, depth=2)
        assert torch.equal(traj[0], FunctionalModel(model).flatten())


def test_trajectory_api(data, tmp_path):
    config = tiny_config(epochs=3)
    _train(data, config, 1, tmp_path)
    traj = ex.load_experts(tmp_path, config)[0]
    assert len(traj) == 4 and traj.epochs == 3 and traj.index == 0 and ex.ExpertConfig.from_dict(traj.meta["config"]) == config
    assert torch.equal(traj[-1], traj.snapshots[3])
    start, target = traj.segment(1, 2)
    assert torch.equal(start, traj[1]) and torch.equal(target, traj[3])
    with pytest.raises(IndexError, match="epochs 0..3"):
        traj[4]
    with pytest.raises(IndexError, match="outside"):
        traj.segment(2, 2)
    assert trajectory.load_trajectory(traj.path).snapshots.equal(traj.snapshots)


# --------------------------------------------------------------------------- seeding


def test_runs_are_reproducible_and_seeds_differ(data, tmp_path):
    config = tiny_config()
    _train(data, config, 2, tmp_path / "a")
    _train(data, config, 2, tmp_path / "b")
    _train(data, config.replace(base_seed=1), 2, tmp_path / "c")
    a, b, c = (ex.load_experts(tmp_path / d) for d in "abc")
    for ta, tb in zip(a, b):
        assert torch.equal(ta.snapshots, tb.snapshots)
        drop = lambda m: {k: v for k, v in m.items() if k != "wall_time_s"}  # noqa: E731
        assert drop(ta.meta) == drop(tb.meta)
    assert not torch.equal(a[0].snapshots, a[1].snapshots), "two experts of one run must differ"
    assert not torch.equal(a[0][0], c[0][0]), "another base seed must give another initialisation"
    assert not torch.equal(a[0][-1], c[0][-1])


def test_expert_seed_is_a_pure_function():
    seeds = {ex.expert_seed(b, k) for b in range(3) for k in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2 ** 63 for s in seeds)
    assert ex.expert_seed(3, 4) == ex.expert_seed(3, 4)


def test_global_rng_is_left_alone(data, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _train(data, tiny_config(epochs=1), 1, tmp_path)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- resuming


def test_resume_after_an_interruption_skips_finished_experts(data, tmp_path, monkeypatch):
    config = tiny_config()
    real = ex._train_one
    calls = []

    def failing(index, *args, **kwargs):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(index, *args, **kwargs)

    monkeypatch.setattr(ex, "_train_one", failing)
    with pytest.raises(KeyboardInterrupt):
        _train(data, config, 4, tmp_path / "run")
    assert [p.name for p in ex.list_experts(tmp_path / "run")] == ["expert_00000.pt", "expert_00001.pt"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    stamps = {p.name: p.stat().st_mtime_ns for p in ex.list_experts(tmp_path / "run")}

    monkeypatch.setattr(ex, "_train_one", real)
    calls.clear()
    monkeypatch.setattr(ex, "_train_one", lambda index, *a, **k: (calls.append(index), real(index, *a, **k))[1])
    _train(data, config, 4, tmp_path / "run")
    assert calls == [2, 3], "finished experts must be skipped"
    assert {p.name: p.stat().st_mtime_ns for p in ex.list_experts(tmp_path / "run")[:2]} == stamps

    monkeypatch.setattr(ex, "_train_one", real)
    _train(data, config, 4, tmp_path / "straight")
    resumed, straight = ex.load_experts(tmp_path / "run"), ex.load_experts(tmp_path / "straight")
    assert len(resumed) == 4
    for r, s in zip(resumed, straight):
        assert torch.equal(r.snapshots, s.snapshots)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import mttlib.experts as ex
    from test_experts import tiny_config, tiny_data

    real_save = ex.atomic_save
    def save(obj, path):
        if path.name == "expert_00001.pt":  # die half-way through writing expert 1
            (path.parent / ".expert_00001.pt.partial.tmp").write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, path)
    ex.atomic_save = save
    ex.train_experts(tiny_data(), tiny_config(epochs=1), 3, {out!r}, device="cpu", progress=False)
""")


def test_killed_run_loses_only_the_expert_in_progress(data, tmp_path):
    out = tmp_path / "run"
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert [p.name for p in ex.list_experts(out)] == ["expert_00000.pt"]
    stamp = (out / "expert_00000.pt").stat().st_mtime_ns
    assert (out / ".expert_00001.pt.partial.tmp").exists()
    ex.train_experts(data, tiny_config(epochs=1), 3, out, device="cpu", progress=False)
    assert (out / "expert_00000.pt").stat().st_mtime_ns == stamp
    assert not (out / ".expert_00001.pt.partial.tmp").exists(), "a killed run's temporary file is cleaned up"
    assert [t.index for t in ex.load_experts(out)] == [0, 1, 2]


def test_no_expert_is_dropped(data, tmp_path):
    config = tiny_config(epochs=1)
    paths = _train(data, config, 11, tmp_path)
    assert len(paths) == 11 and all(p.exists() for p in paths)
    trajectories = ex.load_experts(tmp_path)
    assert [t.index for t in trajectories] == list(range(11))
    assert len(ex.load_experts(tmp_path, num_experts=5)) == 5
    # asking for more trains only the new ones
    _train(data, config, 13, tmp_path)
    assert [t.index for t in ex.load_experts(tmp_path)] == list(range(13))


def test_ensure_experts_trains_then_loads(data, tmp_path):
    config = tiny_config(epochs=1)
    first = ex.ensure_experts(data, config, 2, tmp_path, device="cpu", progress=False)
    stamp = (tmp_path / "expert_00000.pt").stat().st_mtime_ns
    again = ex.ensure_experts(data, config, 2, tmp_path, device="cpu", progress=False)
    assert (tmp_path / "expert_00000.pt").stat().st_mtime_ns == stamp
    assert all(torch.equal(a.snapshots, b.snapshots) for a, b in zip(first, again))


# --------------------------------------------------------------------------- errors


def test_check_model_rejects_another_shape(data, tmp_path):
    _train(data, tiny_config(epochs=1), 1, tmp_path)
    traj = ex.load_experts(tmp_path)[0]
    traj.check_model(make_model("convnet", 3, CLASSES, SIZE, width=4, depth=2))
    traj.check_model(FunctionalModel(make_model("convnet", 3, CLASSES, SIZE, width=4, depth=2)))
    with pytest.raises(ValueError, match=r"trajectory has [\d,]+ parameters .* has [\d,]+.*width"):
        traj.check_model(make_model("convnet", 3, CLASSES, SIZE, width=8, depth=2))


def test_truncated_file_is_named_with_what_to_do(data, tmp_path):
    paths = _train(data, tiny_config(epochs=1), 2, tmp_path)
    blob = paths[1].read_bytes()
    paths[1].write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=r"expert_00001\.pt.*Delete it"):
        ex.load_experts(tmp_path)
    paths[1].unlink()  # the advice works: delete, re-run
    _train(data, tiny_config(epochs=1), 2, tmp_path)
    assert len(ex.load_experts(tmp_path)) == 2


def test_file_of_another_kind_is_rejected(data, tmp_path):
    _train(data, tiny_config(epochs=1), 1, tmp_path)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "expert_00001.pt")
    with pytest.raises(CorruptFileError, match=r"expert_00001\.pt is not a complete expert.*Delete it"):
        ex.load_experts(tmp_path)


def test_expert_file_of_the_wrong_shape_or_metadata_is_refused_in_one_line(data, tmp_path):
    from mttlib.io import atomic_save, safe_load

    path = _train(data, tiny_config(epochs=1), 1, tmp_path)[0]
    good = safe_load(path)
    epochs, numel = good["meta"]["epochs"], good["meta"]["numel"]
    changes = {"snapshots int64 [2]": {"snapshots": torch.zeros(2, dtype=torch.long)},
               f"snapshots float32 [2, 1, {numel}]": {"snapshots": good["snapshots"][:, None]},
               f"snapshots float32 [1, {numel}] are not float32 [{epochs + 1}, {numel}]":
               {"snapshots": good["snapshots"][:1]},
               "records '1' epochs": {"meta": {**good["meta"], "epochs": "1"}},
               "and a NoneType config": {"meta": {**good["meta"], "config": None}}}
    for says, change in changes.items():
        atomic_save({**good, **change}, path)
        with pytest.raises(CorruptFileError) as caught:
            ex.load_experts(tmp_path)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path} is not a complete expert trajectory file (")
        assert says in message and message.endswith("this one is retrained."), message
    atomic_save(good, path)
    assert ex.load_experts(tmp_path)[0].epochs == epochs


def test_expert_file_that_would_run_code_is_refused_unrun(data, tmp_path):
    path = _train(data, tiny_config(epochs=1), 1, tmp_path)[0]
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"snapshots": torch.zeros(2, 3), "meta": {"format": "mttlib-expert"}, "x": Payload()}, path)
    with pytest.raises(CorruptFileError, match=r"expert_00000\.pt was not loaded: it holds Python objects") as caught:
        ex.load_experts(tmp_path)
    assert "weights_only" not in str(caught.value) and not marker.exists()


def test_mixed_configurations_name_the_differing_keys(data, tmp_path):
    _train(data, tiny_config(epochs=1), 2, tmp_path / "a")
    _train(data, tiny_config(epochs=1, lr=0.02), 1, tmp_path / "b")
    shutil.copy(tmp_path / "b" / "expert_00000.pt", tmp_path / "a" / "expert_00002.pt")
    with pytest.raises(ValueError, match=r"expert_00002\.pt differs .* lr \(0\.02 vs 0\.01\)"):
        ex.load_experts(tmp_path / "a")
    (tmp_path / "a" / "config.json").unlink()  # without the folder record: compared with the first expert
    with pytest.raises(ValueError, match=r"mixes experts.*lr \(0\.02 vs 0\.01\)"):
        ex.load_experts(tmp_path / "a")


def test_folder_of_another_configuration_is_refused(data, tmp_path):
    _train(data, tiny_config(epochs=1), 1, tmp_path)
    other = tiny_config(epochs=3, batch_size=8)
    with pytest.raises(ValueError, match=r"batch_size \(8 vs 16\).*epochs \(3 vs 1\)"):
        _train(data, other, 1, tmp_path)
    with pytest.raises(ValueError, match=r"another configuration.*epochs \(3 vs 1\)"):
        ex.load_experts(tmp_path, other)
    assert [p.name for p in ex.list_experts(tmp_path)] == ["expert_00000.pt"], "nothing was trained"


def test_folder_of_other_data_is_refused(data, tmp_path):
    _train(data, tiny_config(epochs=1), 1, tmp_path)
    with pytest.raises(ValueError, match=r"different data.*train_size \(60 vs 40\)"):
        _train(tiny_data(n_train=60), tiny_config(epochs=1), 2, tmp_path)


def test_data_that_does_not_match_the_config(data, tmp_path):
    with pytest.raises(ValueError, match="dataset 'cifar10'.*synthetic"):
        _train(data, tiny_config(dataset="cifar10"), 1, tmp_path)
    with pytest.raises(ValueError, match="zca=True.*without ZCA"):
        _train(data, tiny_config(zca=True), 1, tmp_path)


def test_missing_experts_are_reported(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no expert files"):
        ex.load_experts(tmp_path)
    _train(data, tiny_config(epochs=1), 2, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"lacks 2 of the 4 experts.*expert_00002\.pt"):
        ex.load_experts(tmp_path, num_experts=4)


def test_config_validation_and_round_trip():
    config = tiny_config(lr=1, model_kwargs={"width": 4, "depth": None})
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.model_kwargs == {"width": 4}
    assert ex.ExpertConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown ExpertConfig field.*learning_rate"):
        ex.ExpertConfig.from_dict({**config.to_dict(), "learning_rate": 1})
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"batch_size": 2.5}, {"momentum": float("nan")}):
        with pytest.raises(ValueError):
            tiny_config(**bad)
    prints = {tiny_config(**{k: v}).fingerprint() for k, v in
              [("epochs", 3), ("lr", 0.02), ("momentum", 0.5), ("weight_decay", 1e-4), ("batch_size", 8),
               ("lr_decay", True), ("dsa", False), ("base_seed", 1), ("zca", True), ("model", "mlp"),
               ("dataset", "other")]}
    assert len(prints | {config.fingerprint()}) == 12, "every field must change the fingerprint"
    assert ex.expert_dir("/runs", config).as_posix() == f"/runs/experts/synthetic-convnet-{config.fingerprint()}"
    assert "/" not in ex.expert_dir("/runs", tiny_config(dataset="folder:/a/b")).name


def test_presets_for_the_notebooks():
    classroom, smoke = ex.classroom_config(), ex.smoke_config()
    assert classroom.dataset == smoke.dataset == "cifar10-mini"
    assert classroom.lr == 0.01 and classroom.momentum == 0 and classroom.dsa and classroom.batch_size == 256
    assert classroom.fingerprint() != smoke.fingerprint()


# --------------------------------------------------------------------------- sampling and geometry


def test_distances_and_projection(data, tmp_path):
    _train(data, tiny_config(epochs=4, lr=0.1), 3, tmp_path)
    trajectories = ex.load_experts(tmp_path)
    traj = trajectories[0]
    steps = trajectory.step_lengths(traj)
    assert steps.shape == (4,)
    for e in range(4):
        assert steps[e].item() == pytest.approx(torch.dist(traj[e + 1].double(), traj[e].double()).item(), rel=1e-12)
    spans = trajectory.segment_lengths(traj, 3)
    assert spans.shape == (2,) and spans[1].item() == pytest.approx((traj[4] - traj[1]).double().norm().item())
    with pytest.raises(ValueError, match="1..4"):
        trajectory.segment_lengths(traj, 5)

    coords, explained = trajectory.project_trajectories(trajectories, dims=2)
    assert [c.shape for c in coords] == [(5, 2)] * 3
    x = torch.cat([t.snapshots.double() for t in trajectories])
    x = x - x.mean(0)
    _, s, v = torch.linalg.svd(x, full_matrices=False)  # independent: SVD of the centred snapshots
    reference = x @ v[:2].T
    ours = torch.cat(coords)
    assert torch.allclose(ours.abs(), reference.abs(), atol=1e-6 * s[0].item())
    assert torch.allclose(explained, (s[:2] ** 2) / (s ** 2).sum(), atol=1e-9)
    assert (coords[0][-1] >= 0).all()

    own, shares = trajectory.project_trajectories(trajectories, dims=2, separate=True)
    assert shares.shape == (3, 2) and [c.shape for c in own] == [(5, 2)] * 3
    for traj, c, share in zip(trajectories, own, shares):
        snaps = traj.snapshots.double()
        _, s, v = torch.linalg.svd(snaps - snaps.mean(0), full_matrices=False)
        reference = (snaps - snaps[0]) @ v[:2].T
        assert torch.allclose(c.abs(), reference.abs(), atol=1e-6 * s[0].item())
        assert torch.allclose(share, (s[:2] ** 2) / (s ** 2).sum(), atol=1e-9)
        assert c[0].abs().max() == 0 and (c[-1] >= 0).all()


def test_experts_of_the_old_zca_recipe_are_refused_with_advice_to_retrain(tmp_path):
    from mttlib.io import atomic_save, safe_load
    from mttlib.zca import ZCA

    data = tiny_data()
    data.zca = ZCA.fit(data.train_images.double() / 255, eps=0.1)
    config = tiny_config(zca=True, epochs=1)
    (path,) = _train(data, config, 1, tmp_path)
    assert ex.load_experts(tmp_path)[0].meta["dataset"]["zca"]["recipe"] == "pixels01-kornia"
    # an expert written by the kit before the fix: its dataset record has no recipe
    blob = safe_load(path)
    del blob["meta"]["dataset"]["zca"]["recipe"]
    atomic_save(blob, path)
    with pytest.raises(ValueError, match="another recipe.*Delete it and train the experts"):
        ex.load_experts(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    del record["dataset"]["zca"]["recipe"]
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="experts folder .*another recipe"):
        _train(data, config, 2, tmp_path)


def test_default_recipe_is_the_papers():
    config = ex.ExpertConfig()
    # plain SGD: lr 0.01, no momentum, no weight decay, constant rate, batches of 256, DSA
    assert (config.lr, config.momentum, config.weight_decay) == (0.01, 0.0, 0.0)
    assert (config.batch_size, config.lr_decay, config.dsa, config.zca) == (256, False, True, False)

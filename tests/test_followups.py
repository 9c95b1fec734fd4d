"""Tests of the follow-up options of the distillation loop (mttlib.followups).

TESLA's and DATM's soft labels, DATM's start-epoch schedule and real-correct init, FTD's moving
average of the images. Everything runs on the tiny fakes of test_distill (a ConvNet of width 6 on
8x8 images of 3 classes, expert trajectories of a few SGD steps on random data).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mttlib import distill as D, run, matching
from mttlib import followups as FU
from mttlib.evaluate import SOFT_LABEL_NOTE, evaluate_set, evaluate_soft_and_hard
from mttlib.io import safe_load
from mttlib.presets import FOLLOWUPS, followup_overrides, get_preset, list_presets
from test_distill import CLASSES, IPC, SIZE, config, fake_data, fake_experts, problem, rel


def _strip(metrics):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def _soft_problem(steps=5, batch_syn=4):
    fm, start, target, x, y, plans, source = problem(steps=steps, batch_syn=batch_syn)
    logits = torch.randn(len(y), CLASSES, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return fm, start, target, x, logits, plans, source


# --- soft cross-entropy and meta-gradients with soft labels -----------------------------------------


def test_student_step_with_label_logits_is_soft_cross_entropy():
    fm, start, _, x, y, _, _ = problem()
    logits = torch.randn(len(y), CLASSES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta = start.clone().requires_grad_(True)
    target = torch.softmax(logits, dim=1)
    written_out = -(target * torch.log_softmax(fm(theta, x), dim=1)).sum(1).mean()
    expected, = torch.autograd.grad(written_out, theta)
    got = matching.step_gradient(fm, start.clone().requires_grad_(True), x, logits, create_graph=False)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # with one-hot probabilities the soft loss is the ordinary cross-entropy
    one_hot = F.one_hot(y, CLASSES).double()
    assert float(F.cross_entropy(logits, one_hot)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-12)


@pytest.mark.parametrize("strategy", matching.STRATEGIES)
def test_label_gradient_flows_with_both_strategies(strategy):
    fm, start, target, x, logits, plans, source = _soft_problem(steps=3)
    out = matching.meta_gradient(fm, start, target, x, logits, 0.05, plans, source, strategy)
    assert len(out) == 4
    loss, gx, glr, gy = out
    assert gx.shape == x.shape and glr.shape == () and gy.shape == logits.shape
    for g in (gx, glr, gy):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # hard labels still give three results
    assert len(matching.meta_gradient(fm, start, target, x, logits.argmax(1), 0.05, plans, source, strategy)) == 3


def test_unroll_and_recompute_agree_in_float64_with_soft_labels():
    fm, start, target, x, logits, plans, source = _soft_problem(steps=5, batch_syn=4)
    lr = torch.tensor(0.05, dtype=torch.float64)
    l1, gx1, glr1, gy1 = matching.meta_gradient(fm, start, target, x, logits, lr, plans, source, "unroll")
    l2, gx2, glr2, gy2 = matching.meta_gradient(fm, start, target, x, logits, lr, plans, source, "recompute")
    assert abs(float(l1 - l2)) <= 1e-12 * float(l1)
    assert rel(gx2, gx1) < 1e-8
    assert abs(float(glr2 - glr1)) < 1e-8 * abs(float(glr1))
    assert rel(gy2, gy1) < 1e-8


def test_label_gradient_matches_finite_differences():
    fm, start, target, x, logits, plans, source = _soft_problem(steps=4, batch_syn=4)
    lr = torch.tensor(0.05, dtype=torch.float64)

    def loss(labels):
        return float(matching.meta_gradient(fm, start, target, x, labels, lr, plans, source, "unroll")[0])

    gy = matching.meta_gradient(fm, start, target, x, logits, lr, plans, source, "recompute")[3]
    g = torch.Generator().manual_seed(4)
    eps = 1e-5
    for _ in range(3):
        v = torch.randn(logits.shape, generator=g, dtype=torch.float64)
        v /= v.norm()
        fd = (loss(logits + eps * v) - loss(logits - eps * v)) / (2 * eps)
        assert fd == pytest.approx(float((gy * v).sum()), rel=1e-5, abs=1e-10)


def test_one_hot_like_logits_reproduce_hard_label_pixel_gradient():
    """Soft labels that are (numerically) one-hot give the hard-label meta-gradient."""
    fm, start, target, x, y, plans, source = problem(steps=3, batch_syn=4)
    logits = 200.0 * F.one_hot(y, CLASSES).double()
    hard = matching.meta_gradient(fm, start, target, x, y, 0.05, plans, source, "recompute")
    soft = matching.meta_gradient(fm, start, target, x, logits, 0.05, plans, source, "recompute")
    assert rel(soft[1], hard[1]) < 1e-10 and float(soft[0]) == pytest.approx(float(hard[0]), rel=1e-12)


# --- soft labels in the loop ------------------------------------------------------------------------


def test_tesla_labels_are_the_experts_softmax_and_stay_fixed():
    data, experts = fake_data(), fake_experts()
    run = D.Distiller(config(soft_labels="fixed", label_epoch=1, label_expert=1), experts, data)
    expected = FU.expert_logits(run.fm, experts[1][1], run.images.detach())
    assert run.label_logits.shape == (CLASSES * IPC, CLASSES) and not run.label_logits.requires_grad
    assert torch.allclose(run.label_logits, expected)
    before = run.label_logits.clone()
    run.step()
    run.step()
    assert torch.equal(run.label_logits, before) and run.extras.opt_label is None


def test_datm_labels_start_from_correct_experts_and_learn():
    data, experts = fake_data(), fake_experts(num=3)
    run = D.Distiller(config(soft_labels="learn", lr_label=5.0), experts, data)
    epoch = run.config.max_start_epoch  # label_epoch None: max_start_epoch
    x = run.images.detach()
    outs = [FU.expert_logits(run.fm, t[epoch], x) for t in experts]
    for i in range(x.shape[0]):
        right = [o[i] for o in outs if int(o[i].argmax()) == int(run.labels[i])]
        want = torch.stack(right).mean(0) if right else torch.stack([o[i] for o in outs]).mean(0)
        assert torch.allclose(run.label_logits[i].detach(), want, atol=1e-5)
    before = run.label_logits.detach().clone()
    run.step()
    assert not torch.equal(run.label_logits.detach(), before), "the logits learn"
    assert run.extras.opt_label.param_groups[0]["momentum"] == 0.9
    assert torch.isfinite(run.label_logits).all()


def test_soft_label_loop_is_the_same_with_both_strategies():
    data, experts = fake_data(), fake_experts()
    results = {s: run.distill(config(soft_labels="learn", strategy=s, iterations=2), experts, data, None,
                            progress=False) for s in matching.STRATEGIES}
    a, b = results["unroll"], results["recompute"]
    assert rel(b.images, a.images) < 1e-5 and rel(b.label_logits, a.label_logits) < 1e-5
    assert b.soft_labels.shape == (CLASSES * IPC, CLASSES)
    assert torch.allclose(b.soft_labels.sum(1), torch.ones(CLASSES * IPC))


# --- the start-epoch schedule and the real-correct init ---------------------------------------------


def test_start_epoch_schedule_values():
    values = [FU.start_epoch_upper(i, 4, 8, 100) for i in (0, 1, 24, 25, 50, 74, 75, 99, 100, 101, 10_000)]
    assert values == [4, 4, 4, 5, 6, 6, 7, 7, 8, 8, 8]
    assert FU.start_epoch_upper(0, 2, 3, 1) == 2 and FU.start_epoch_upper(1, 2, 3, 1) == 3
    assert all(FU.start_epoch_upper(i, 5, None, 0) == 5 for i in (0, 10, 1000))
    cfg = config(min_start_epoch=1, max_start_epoch=2, max_start_epoch_end=3, start_epoch_rise=4)
    assert [FU.start_epoch_bounds(cfg, i) for i in (0, 3, 4, 9)] == [(1, 2), (1, 2), (1, 3), (1, 3)]
    with pytest.raises(ValueError, match="start_epoch_rise"):
        config(max_start_epoch_end=3)
    with pytest.raises(ValueError, match="min_start_epoch"):
        config(min_start_epoch=2)
    with pytest.raises(ValueError, match="max_start_epoch_end"):
        config(max_start_epoch_end=1, start_epoch_rise=3)


def test_schedule_draws_inside_the_window():
    data, experts = fake_data(), fake_experts()
    cfg = config(min_start_epoch=1, max_start_epoch=2, max_start_epoch_end=3, start_epoch_rise=3, iterations=12)
    result = run.distill(cfg, experts, data, None, progress=False)
    uppers = [m["start_upper"] for m in result.metrics]
    assert uppers == [FU.start_epoch_upper(i, 2, 3, 3) for i in range(12)]
    assert all(1 <= m["start_epoch"] < m["start_upper"] for m in result.metrics)
    assert {m["start_epoch"] for m in result.metrics[3:]} == {1, 2}
    with pytest.raises(ValueError, match="max_start_epoch_end=4"):
        D.Distiller(config(max_start_epoch_end=4, start_epoch_rise=2), experts, data)  # 4 - 1 + 2 > 4 epochs


def test_real_correct_init_picks_images_the_expert_gets_right():
    data, experts = fake_data(per_class=12), fake_experts()
    run = D.Distiller(config(ipc=1), experts, data)  # only for its functional model
    mask = FU.correctly_classified(run.fm, experts[0][2], data)
    counts = [int(mask[data.train_labels == c].sum()) for c in range(CLASSES)]
    ipc = max(1, min(c for c in counts if c > 0))
    with pytest.warns(RuntimeWarning, match="eligible") if min(counts) < ipc else _nothing():
        run = D.Distiller(config(ipc=ipc, init="real-correct", label_epoch=2), experts, data)
    real = data.preprocess(data.train_images)
    for img, lab in zip(run.images.detach().cpu(), run.labels.cpu()):  # the run's state lives on its device
        hits = [k for k in range(len(real)) if torch.equal(real[k], img)]
        assert len(hits) == 1 and int(data.train_labels[hits[0]]) == int(lab)
        if counts[int(lab)] >= ipc:
            assert bool(mask[hits[0]]), "an eligible class starts from correctly classified images"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- the moving average of the images ---------------------------------------------------------------


def test_ema_arithmetic_matches_the_closed_form():
    d = 0.8
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(6)]
    ema = xs[0].clone()
    for x in xs[1:]:
        FU.ema_update(ema, x, d)
    k = len(xs) - 1
    closed = d ** k * xs[0] + (1 - d) * sum(d ** (k - j) * xs[j] for j in range(1, k + 1))
    assert torch.allclose(ema, closed, rtol=1e-14, atol=1e-14)


def test_ema_in_the_loop_follows_the_images():
    data, experts = fake_data(), fake_experts()
    run = D.Distiller(config(ema_decay=0.7), experts, data)
    seen = [run.images.detach().clone()]
    for _ in range(3):
        run.step()
        seen.append(run.images.detach().clone())
    k = 3
    closed = 0.7 ** k * seen[0] + 0.3 * sum(0.7 ** (k - j) * seen[j] for j in range(1, k + 1))
    assert torch.allclose(run.images_ema, closed, rtol=1e-5, atol=1e-6)
    assert not torch.equal(run.images_ema, run.images.detach())
    with pytest.raises(ValueError, match="ema_decay"):
        config(ema_decay=1.0)


# --- off means off; resume; files --------------------------------------------------------------------


def test_options_off_give_identical_results():
    data, experts = fake_data(), fake_experts()
    plain = D.Distiller(config(), experts, data)
    explicit = D.Distiller(config(soft_labels="none", lr_label=2.0, label_epoch=None, label_expert=0,
                                  min_start_epoch=0, max_start_epoch_end=None, start_epoch_rise=0,
                                  ema_decay=None), experts, data)
    for distiller in (plain, explicit):
        for _ in range(3):
            distiller.step()
    assert torch.equal(plain.images, explicit.images) and torch.equal(plain.syn_lr, explicit.syn_lr)
    assert _strip(plain.metrics) == _strip(explicit.metrics)
    state = plain.state_dict()
    assert not {"label_logits", "opt_label", "images_ema"} & set(state), "the checkpoint is as before"
    assert set(run._distilled(plain)) == {"format", "images", "labels", "syn_lr", "iteration", "config"}
    # a checkpoint written before the follow-ups existed (no such config fields) still resumes
    old = {k: v for k, v in state["config"].items() if k not in ("soft_labels", "lr_label", "label_epoch",
                                                                   "label_expert", "min_start_epoch",
                                                                   "max_start_epoch_end", "start_epoch_rise",
                                                                   "ema_decay")}
    run._check_resumable(old, config(), "checkpoint.pt")
    with pytest.raises(ValueError, match="soft_labels"):
        run._check_resumable(old, config(soft_labels="learn"), "checkpoint.pt")


def test_resume_with_every_option_is_bit_for_bit(tmp_path):
    data, experts = fake_data(), fake_experts()
    cfg = config(iterations=5, checkpoint_every=2, soft_labels="learn", lr_label=5.0, ema_decay=0.6,
                 min_start_epoch=0, max_start_epoch_end=3, start_epoch_rise=3, strategy="unroll")
    clean = run.distill(cfg, experts, data, tmp_path / "clean", progress=False)

    class Crash(Exception):
        pass

    def crash(m):
        if m["iteration"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run.distill(cfg, experts, data, tmp_path / "run", progress=False, callback=crash)
    assert set(safe_load(tmp_path / "run" / "checkpoint.pt")) >= {"label_logits", "opt_label", "images_ema"}
    resumed = run.distill(cfg, experts, data, tmp_path / "run", progress=False, resume=True)
    assert torch.equal(resumed.images, clean.images) and resumed.syn_lr == clean.syn_lr
    assert torch.equal(resumed.label_logits, clean.label_logits)
    assert torch.equal(resumed.images_ema, clean.images_ema)
    assert _strip(resumed.metrics) == _strip(clean.metrics)
    saved = run.load_distilled(tmp_path / "run")
    assert torch.equal(saved["images_ema"], clean.images_ema) and torch.equal(saved["label_logits"], clean.label_logits)
    assert torch.allclose(saved["soft_labels"], F.softmax(clean.label_logits, 1))
    assert saved["images"].shape == saved["images_ema"].shape
    with pytest.raises(ValueError, match="ema_decay"):
        run.distill(cfg.replace(ema_decay=None), experts, data, tmp_path / "run", progress=False, resume=True)


def test_texture_mode_refuses_soft_labels_and_keeps_an_ema():
    from mttlib.texture import distill_textures

    data, experts = fake_data(), fake_experts()
    with pytest.raises(ValueError, match="soft labels"):
        distill_textures(data, experts, None, config=config(ipc=1, soft_labels="learn"), canvas_size=2,
                         progress=False)
    result = distill_textures(data, experts, None, config=config(ipc=1, ema_decay=0.5, iterations=2,
                                                                 max_start_epoch_end=3, start_epoch_rise=1),
                              canvas_size=2, progress=False)
    assert result.images_ema.shape == result.images.shape == (CLASSES, 3, 2 * SIZE, 2 * SIZE)


# --- evaluation with soft labels, presets, command line ----------------------------------------------


def test_evaluation_with_soft_labels_reports_both_and_is_labelled():
    data = fake_data()
    images = data.preprocess(data.train_images[:6])
    hard = data.train_labels[:6]
    soft = F.softmax(torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(0)), 1)
    kw = dict(model="convnet", model_kwargs={"width": 4, "depth": 1}, num_runs=2, epochs=2, progress=False,
              device="cpu")
    both = evaluate_soft_and_hard(images, soft, hard, data, **kw)
    assert set(both) == {"hard", "soft"}
    assert both["hard"].labels == "hard" and both["soft"].labels == "soft"
    assert both["soft"].config["label_note"] == SOFT_LABEL_NOTE and "knowledge distillation" in str(both["soft"])
    assert "knowledge distillation" not in str(both["hard"])
    assert both["hard"].config["seeds"] == both["soft"].config["seeds"], "the same networks"
    for r in both.values():
        assert 0 <= r.mean <= 1 and len(r.accuracies) == 2
    assert evaluate_set(images, hard, data, **kw).accuracies == both["hard"].accuracies
    with pytest.raises(ValueError, match="soft_labels"):
        evaluate_soft_and_hard(images, hard, hard, data, **kw)


@pytest.mark.parametrize("name", sorted(FOLLOWUPS))
def test_followup_bundles_make_valid_configs(name):
    for preset in list_presets():
        cfg = D.DistillConfig.from_preset(preset, **followup_overrides(name, preset))
        assert cfg.max_start_epoch_end is None or cfg.max_start_epoch_end - 1 + cfg.expert_epochs <= \
            preset.expert_train_epochs
    classroom = get_preset("cifar10-mini", 1, "classroom")
    assert followup_overrides("mtt", classroom) == {}
    decay = followup_overrides("tesla,ftd-ema", classroom)["ema_decay"]
    assert followup_overrides("tesla,ftd-ema", classroom) == {"soft_labels": "fixed", "ema_decay": decay}
    assert 0 < decay <= 0.999 and decay ** classroom.iterations == pytest.approx(math.exp(-3), rel=0.5)
    assert followup_overrides("ftd-ema", classroom.replace(iterations=2)) == {"ema_decay": 0.5}
    sched = followup_overrides("datm-schedule", classroom)
    assert sched["max_start_epoch"] <= classroom.max_start_epoch <= sched["max_start_epoch_end"]
    with pytest.raises(KeyError, match="unknown follow-up"):
        followup_overrides("magic", classroom)


def test_cli_followup_switches(tmp_path, monkeypatch):
    import mttlib.cli
    import mttlib.experts

    data = fake_data()
    monkeypatch.setattr(mttlib.cli, "load_dataset", lambda name, root=None, zca=False: data)
    monkeypatch.setattr(mttlib.experts, "load_experts", lambda path: fake_experts(width=8, depth=None))
    args = ["--dataset", "cifar10-mini", "--ipc", "1", "--preset", "smoke", "--experts", str(tmp_path / "e"),
            "--out", str(tmp_path / "run"), "--no-progress", "--strategy", "recompute", "--followup", "tesla",
            "--ema-decay", "0.5", "--iterations", "2"]
    assert mttlib.cli.main(["distill", *args]) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert cfg["soft_labels"] == "fixed" and cfg["ema_decay"] == 0.5
    saved = run.load_distilled(tmp_path / "run")
    assert {"soft_labels", "images_ema"} <= set(saved) and math.isclose(float(saved["soft_labels"].sum()), 3.0,
                                                                        rel_tol=1e-5)

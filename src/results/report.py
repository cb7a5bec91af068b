"""A finished run's report: its pictures and report.md, from the files in its run dir and the images.

    curves_loss.png, curves_accuracy.png   training and validation per epoch, every fold overlaid
    test_label_counts.png                  how often each label is predicted on the test set
    test_samples.png                       50 test digits with their predicted labels
    confusion.png                          the out-of-fold confusion matrix
    most_wrong.png                         the 30 most confidently wrong out-of-fold digits
    report.md                              the pictures and the per-fold metrics table
"""
from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pandas as pd

from src import rundir
from src.errors import UserError
from src.files import atomic_write
from src.results import measured, pictures


def build(run_dir: Path, x_train: np.ndarray, x_test: np.ndarray) -> Path:
    """Write every picture and report.md for the finished run in `run_dir`; returns report.md."""
    metrics = rundir.read_metrics(run_dir)
    if metrics is None:
        raise UserError(f"{run_dir} has no {rundir.METRICS}: the run is not finished (python -m src.ensemble run_dir={run_dir})")
    fmt = rundir.read_submission_format(run_dir)
    oof = pd.read_csv(run_dir / rundir.OOF)
    probs = rundir.probabilities(oof, 3)
    test_predicted = rundir.probabilities(pd.read_csv(run_dir / rundir.TEST_PROBS), 1).argmax(1)
    names = [str(v) for v in fmt.labels(np.arange(probs.shape[1]))]

    histories = {}
    for f in metrics["folds"]:
        path = rundir.fold_dir(run_dir, f["fold"]) / rundir.HISTORY
        if path.exists():
            histories[f["fold"]] = pd.read_csv(path)
    for metric in ("loss", "accuracy"):
        pictures.curves(histories, metric, run_dir / rundir.CURVES.format(metric=metric))
    pictures.label_counts(test_predicted, names, run_dir / rundir.LABEL_COUNTS)
    shown = min(50, len(x_test))
    pictures.digit_grid(x_test[:shown], [names[k] for k in test_predicted[:shown]], 10,
                        run_dir / rundir.TEST_SAMPLES, f"the first {shown} test images and their predicted labels")
    predicted = probs.argmax(1)
    index = {name: k for k, name in enumerate(names)}
    truth = np.array([index[str(v)] for v in oof["label"]], np.int64)
    pictures.confusion(truth, predicted, names, run_dir / rundir.CONFUSION)
    wrong = np.flatnonzero(predicted != truth)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:30]
    pictures.digit_grid(x_train[oof["row"].to_numpy()[worst]],
                        [f"true {names[truth[i]]} → {names[predicted[i]]}\n{probs[i, predicted[i]]:.2f}" for i in worst], 10,
                        run_dir / rundir.MOST_WRONG, f"the {len(worst)} most confidently wrong out-of-fold digits (of {len(wrong):,} wrong)")

    plan = rundir.read_plan(run_dir)
    lines = ["# Run report", "", f"Run dir: `{run_dir}`", "", *recipe_lines(rundir.read_record(run_dir)),
             *plan_lines(plan), *behind_lines(plan, histories, _planned_epochs(run_dir, plan, histories)), "",
             "| fold | accuracy | best epoch | seconds | precision |", "|---:|---:|---:|---:|---|"]
    lines += [f"| {f['fold']} | {f['accuracy']:.4f} | {f['best_epoch']} | {f['seconds']:.1f} | {f.get('precision', '?')} |"
              for f in metrics["folds"]]
    lines += ["", f"Mean CV accuracy **{metrics['cv_mean']:.4f}** ± {metrics['cv_std']:.4f}; "
              f"out-of-fold accuracy {metrics['oof_accuracy']:.4f} on {metrics['oof_rows']:,} rows."]
    if "test_accuracy" in metrics:
        lines.append(f"Test accuracy of the ensemble: {metrics['test_accuracy']:.4f}.")
    if metrics.get("folds_missing"):
        lines.append(f"Partial ensemble: fold(s) {metrics['folds_missing']} not complete.")
    for title, name in (("Loss", rundir.CURVES.format(metric="loss")), ("Accuracy", rundir.CURVES.format(metric="accuracy")),
                        ("Predicted test labels", rundir.LABEL_COUNTS), ("Test digits", rundir.TEST_SAMPLES),
                        ("Out-of-fold confusion matrix", rundir.CONFUSION), ("Most confidently wrong", rundir.MOST_WRONG)):
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    report = run_dir / rundir.REPORT
    atomic_write(report, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return report


AUGMENTS = (("rotation", "rotation ±{}°"), ("zoom", "zoom ±{}"), ("width_shift", "shift ±{}"), ("elastic", "elastic {} px"),
            ("flip", "flips"), ("crop", "crop from {} px padding"), ("erasing", "erasing p={}"))


def plan_lines(plan: dict | None) -> list[str]:
    """What the time_limit planned beyond whole epochs: the fold count where it chose it
    (plan.json's fold_choice), and epochs of part of a pass where it planned them."""
    plan = plan or {}
    lines = []
    if choice := plan.get("fold_choice"):
        lines.append(f"Fold count: **{choice['folds']}**, chosen for time_limit={plan['time_limit_s']:.0f}s: {choice['why']} "
                     f"(epochs per fold by fold count: {rundir.fold_counts_text(choice['epochs'])}).")
    if plan.get("epoch_fraction", 1.0) < 1:
        lines.append(f"Epochs: **{plan['epochs']}** per fold, each on {plan['epoch_fraction']:.1%} of a pass over the fold's "
                     f"training rows (a fresh random subset each), so that time_limit={plan['time_limit_s']:.0f}s is spent "
                     f"rather than rounded down to {math.floor(plan['epochs'] * plan['epoch_fraction'])} whole pass(es).")
    return lines


def _planned_epochs(run_dir: Path, plan: dict | None, histories: dict) -> dict[int, int]:
    """Each fold's own planned epochs: the plan's, or what its job planned when it started off
    the plan's time (fold_<k>/epochs.json)."""
    return {k: rundir.fold_epochs(rundir.fold_dir(run_dir, k), plan["epochs"]) for k in histories} if plan else {}


def behind_lines(plan: dict | None, histories: dict[int, pd.DataFrame], own: dict[int, int] | None = None) -> list[str]:
    """The folds whose job planned other epochs than the time_limit's plan because it started
    early or late (`own`: each fold's own), and those that trained fewer than they planned: the
    machine ran slower than calibrated and their deadlines cut them (src.training.callbacks.Deadline)."""
    if not plan:
        return []
    own = {k: (own or {}).get(k, plan["epochs"]) for k in histories}
    lines = []
    replanned = {k: e for k, e in sorted(own.items()) if e != plan["epochs"]}
    if replanned:
        which = ", ".join(f"fold {k} {e}" for k, e in replanned.items())
        lines.append(f"Re-planned at their start: {len(replanned)} fold(s) laid their schedules over the epochs that fit "
                     f"before their deadlines instead of the {plan['epochs']} planned ({which}): they started late (a queue, "
                     "or slower folds before them) or early (the folds before them ran faster than planned; cv.log says).")
    short = {k: len(h) for k, h in sorted(histories.items()) if len(h) < own[k]}
    if short:
        trained = ", ".join(f"fold {k} {epochs} of {own[k]}" for k, epochs in short.items())
        lines.append(f"Behind the plan: {len(short)} of {len(histories)} fold(s) trained fewer epochs than planned "
                     f"({trained}): the machine ran slower than calibrated, so to end within the time_limit their "
                     "deadlines skipped epochs from the middle of their schedules, or stopped them where not one more "
                     "epoch fit or the schedule is epoch-wise (cv.log says which).")
    return lines


def recipe_lines(record: dict) -> list[str]:
    """What trained the run: its recipe's name and why it was chosen (conf/recipe/), the settings
    that matter most, from run.json's recorded config, and how the seed recipe did where this
    recipe was measured against it (src.results.measured)."""
    cfg = record.get("resolved_config", {})
    named = cfg.get("recipe") or {"name": None, "why": rundir.LATER_KEYS["recipe.why"]}
    model = cfg.get("model", {})
    aug = cfg.get("augment", {})
    shown = [text.format(aug[key]) for key, text in AUGMENTS if aug.get("enabled", True) and aug.get(key)]
    knobs = ", ".join(f"{k} {v}" for k, v in model.items() if not k.startswith("_") and not isinstance(v, (dict, list)))
    epochs = f"epochs for time_limit={cfg['time_limit']} (plan.json)" if cfg.get("time_limit") else f"{cfg.get('epochs', '?')} epochs"
    return [f"Recipe: **{named['name'] or 'not named'}**: {rundir.recipe_why(cfg)}.",
            f"Model `{model.get('_target_', '?')}` ({knobs or 'its defaults'}), batch {cfg.get('batch_size', '?')}, "
            f"{epochs}, schedule `{str(cfg.get('schedule', {}).get('_target_', '?')).rsplit('.', 1)[-1]}`, "
            f"learning rate {cfg.get('optimizer', {}).get('learning_rate', '?')}; augmentation: {', '.join(shown) or 'none'}.",
            *measured.against_seed(cfg)]

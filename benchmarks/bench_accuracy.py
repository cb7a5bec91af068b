"""Accuracy per minute: the seed recipe and the new one under the same `time_limit`, judged on
labelled rows that no run ever trains on, validates on or chooses settings by.

    python benchmarks/bench_accuracy.py --train ../shared/data/digits/train.csv.gz      # every row, ~2.5 h
    python benchmarks/bench_accuracy.py --train ... --rows seed_10m,new_10m             # some rows
    python benchmarks/bench_accuracy.py --data fashion_mnist --train fashion-mnist_train.csv \
        --test fashion-mnist_test.csv --rows seed_12m,preset_12m --out ~/runs/bench_fashion  # a preset, its labelled test file

With `--test` (a labelled test file, as Fashion-MNIST ships) that file is the test set and every
training row is trained on. Otherwise a fixed seed picks `--holdout` (10,000) rows of the labelled file as the test set, written with
their labels as `data.test` / `data.test_labels`; the runs train on the other rows (32,000). Every
row is `python -m src.cv fold=5 time_limit=...` into `--out/runs/<row>`, timed from process start
to the written submission and report:

    seed_10m, seed_20m   experiment=kfold_cnn (the 2020 recipe), its epochs planned for the limit
    seed_12m, seed_30m   the same at the budgets of issue 26's targets
    preset_12m, preset_30m   the preset's own recipe (`--data`, conf/recipe/), no experiment
    recipe_12m, recipe_30m   a named recipe (`--recipe`, default generic) on the preset's data
    new_10m, new_20m, new_60m   the new recipe (--new, default experiment=cnn_cosine_ema)
    pseudo_20m           a 20-min second stage of the new recipe on new_20m's confident test predictions
    swa_20m              the seed recipe with stochastic weight averaging (callbacks=swa)

Finished rows are kept in `--out/results.json` and not run again (delete a row's entry and run
dir to measure it again). Each row should run alone on the machine. Prints a table with the wall
time, mean CV, OOF accuracy and the ensemble's holdout accuracy of each row, and the machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine as bench_machine  # noqa: E402
ROWS = {  # name: (recipe, limit, pseudo source row)
    "seed_10m": ("seed", "10m", None),
    "seed_20m": ("seed", "20m", None),
    "seed_12m": ("seed", "12m", None),
    "preset_12m": ("preset", "12m", None),
    "seed_30m": ("seed", "30m", None),
    "preset_30m": ("preset", "30m", None),
    "recipe_12m": ("recipe", "12m", None),
    "recipe_30m": ("recipe", "30m", None),
    "new_10m": ("new", "10m", None),
    "new_20m": ("new", "20m", None),
    "new_60m": ("new", "60m", None),
    "pseudo_20m": ("new", "20m", "new_20m"),
    "swa_20m": ("swa", "20m", None),
}


def split(train: Path, out: Path, holdout: int, seed: int) -> dict[str, Path]:
    """Write the training rows and the held-out rows (pixels, and their labels apart) once."""
    files = {"train": out / "train.csv", "test": out / "holdout.csv", "test_labels": out / "holdout_labels.csv"}
    stamp = out / "split.json"
    source = hashlib.sha256(train.read_bytes()).hexdigest()
    wanted = {"source": source, "holdout": holdout, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted and all(p.exists() for p in files.values()):
        return files
    frame = pd.read_csv(train)
    order = np.random.default_rng(seed).permutation(len(frame))
    held, kept = frame.iloc[np.sort(order[:holdout])], frame.iloc[np.sort(order[holdout:])]
    out.mkdir(parents=True, exist_ok=True)
    kept.to_csv(files["train"], index=False)
    held.drop(columns="label").to_csv(files["test"], index=False)
    pd.DataFrame({"ImageId": np.arange(1, len(held) + 1), "Label": held["label"].to_numpy()}).to_csv(files["test_labels"], index=False)
    stamp.write_text(json.dumps(wanted) + "\n")
    return files


def machine() -> str:
    """The CPU, its flags and the software: which machine a figure came from (benchmarks/machine.py)."""
    return bench_machine.describe(bench_machine.machine(measure=False))


EXPERIMENTS = {"seed": ["experiment=kfold_cnn"], "swa": ["experiment=kfold_cnn", "callbacks=swa"], "preset": []}


def run_row(name: str, files: dict[str, Path], out: Path, new: str, fold: str, data: str = "digit_recognizer",
            extra: tuple[str, ...] = (), named_recipe: str = "generic") -> dict:
    recipe, limit, source = ROWS[name]
    run_dir = out / "runs" / name
    chosen = {**EXPERIMENTS, "recipe": [f"recipe={named_recipe}"]}.get(recipe, [f"experiment={new}"])
    args = [f"data={data}"] + [f"data.{k}={v}" for k, v in files.items()] + [
        *([] if fold == "auto" else [f"fold={fold}"]), f"time_limit={limit}", *chosen, *extra, f"hydra.run.dir={run_dir}"]
    if source:
        args.append(f"pseudo.run_dir={out / 'runs' / source}")
    print(f"{name}: python -m src.cv {' '.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "src.cv", *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}); the same command resumes it")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    named = json.loads((run_dir / "run.json").read_text())["resolved_config"].get("recipe", {}).get("name")
    described = {"new": new, "swa": "kfold_cnn + callbacks=swa", "preset": f"data={data}: {named}", "recipe": f"recipe={named}"}
    return {"recipe": described.get(recipe, "kfold_cnn"),
            "limit": limit, "seconds": round(seconds, 1),
            "cv_mean": metrics["cv_mean"], "oof_accuracy": metrics["oof_accuracy"],
            "holdout_accuracy": metrics["test_accuracy"], "epochs": metrics.get("time_limit", {}).get("epochs"),
            "folds": len(metrics["folds"]),
            "pseudo_rows": metrics.get("pseudo", {}).get("rows"), "source": source, "machine": machine()}


def table(results: dict) -> str:
    lines = ["| row | recipe | time_limit | wall | folds × epochs | mean CV | OOF | held-out or --test accuracy |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ROWS:
        r = results.get(name)
        if not r:
            continue
        limit_s = float(r["limit"].rstrip("m")) * 60
        wall = f"{r['seconds'] / 60:.1f} min ({r['seconds'] / limit_s:.0%} of the limit)"
        if r["source"] and r["source"] in results:
            wall += f" (+ {results[r['source']]['seconds'] / 60:.1f} min first stage, {r['pseudo_rows']:,} pseudo-labels)"
        lines.append(f"| {name} | {r['recipe']} | {r['limit']} | {wall} | {r.get('folds', '?')} × {r['epochs']} | {r['cv_mean']:.4f} | "
                     f"{r['oof_accuracy']:.4f} | {r['holdout_accuracy']:.4f} |")
    machines = sorted({r["machine"] for r in results.values()})
    return "\n".join(lines + [f"\nmachine: {'; '.join(machines)}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, help="the competition's labelled train.csv(.gz)")
    parser.add_argument("--out", type=Path, default=Path.home() / "runs" / "bench_accuracy")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--new", default="cnn_cosine_ema", help="the experiment measured against kfold_cnn")
    parser.add_argument("--data", default="digit_recognizer", help="the preset (conf/data/) whose recipe the preset_* rows run")
    parser.add_argument("--recipe", default="generic", help="the recipe (conf/recipe/) the recipe_* rows run (one --out per recipe: rows are kept by name)")
    parser.add_argument("--test", type=Path, help="a labelled test file to score on instead of held-out training rows")
    parser.add_argument("--holdout", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--fold", default="5", help="fold= of every row; auto: none, the time_limit chooses the fold count")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: the seed_10m row on 300 rows of the embedded sample (100 held out), 2 folds x 1 epoch, into --out")
    args = parser.parse_args()
    extra: tuple[str, ...] = ()
    if args.smoke:
        import project

        args.train = project.tiny_csvs(args.out / "source")[0]
        args.rows, args.holdout, args.fold, extra = "seed_10m", 100, "2", ("epochs=1", "tensorboard=false", "verbose=false", "batch_size=32", "jobs=1")
    if args.train is None:
        parser.error("--train is required (or --smoke)")
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown row(s) {unknown}: choose from {list(ROWS)}")
    files = ({"train": args.train.resolve(), "test": args.test.resolve()} if args.test
             else split(args.train.resolve(), args.out.resolve(), args.holdout, args.seed))
    record = args.out / "results.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    for name in rows:
        source = ROWS[name][2]
        if source and source not in results:
            sys.exit(f"{name} needs {source} first: add it to --rows")
        if name in results:
            continue
        results[name] = run_row(name, files, args.out.resolve(), args.new, args.fold, args.data, extra, args.recipe)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(record)
    print(table(results))


if __name__ == "__main__":
    main()

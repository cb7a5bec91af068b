"""Choosing the new recipe: variants under the same short time limit, judged on their own
training rows' out-of-fold accuracy, never on the held-out rows that bench_accuracy.py reports.

    python benchmarks/bench_recipes.py --train ../shared/data/digits/train.csv.gz          # every variant, ~40 min
    python benchmarks/bench_recipes.py --train ... --variants seed,cosine_ema_ls

Uses bench_accuracy.py's split (the same seed: the 32,000 training rows; its held-out rows are the
test file, without their labels). Each variant is `python -m src.cv fold=2 time_limit=5m ...`:
two folds side by side, each fold's model seeing about as many images as a fold of a 10-min
`fold=5` run. Finished variants are kept in `--out/recipes.json`. Prints mean CV and OOF accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import REPO, machine, split  # noqa: E402

VARIANTS = {  # name: overrides on top of the defaults
    "seed": ["experiment=kfold_cnn"],
    "cosine": ["schedule=cosine"],
    "cosine_lr2e-3": ["schedule=cosine", "optimizer.learning_rate=2e-3"],
    "cosine_ema": ["schedule=cosine", "optimizer.learning_rate=2e-3", "+optimizer.use_ema=true", "+optimizer.ema_momentum=0.99"],
    "cosine_ema_ls": ["experiment=cnn_cosine_ema", "label_smoothing=0.1"],
    "cosine_ema_ls_elastic": ["experiment=cnn_cosine_ema", "label_smoothing=0.1", "augment.elastic=34", "augment.elastic_sigma=4"],
    "cosine_ema_ls_batch256": ["experiment=cnn_cosine_ema", "label_smoothing=0.1", "batch_size=256", "optimizer.learning_rate=3e-3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path)
    parser.add_argument("--out", type=Path, default=Path.home() / "runs" / "bench_accuracy")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--limit", default="5m")
    parser.add_argument("--holdout", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--smoke", action="store_true", help="seconds: the seed variant on 300 rows, 1 epoch, into --out")
    args = parser.parse_args()
    extra: list[str] = []
    if args.smoke:
        import project

        args.train = project.tiny_csvs(args.out / "source")[0]
        args.variants, args.holdout, extra = "seed", 100, ["epochs=1", "tensorboard=false", "verbose=false", "batch_size=32", "jobs=1"]
    if args.train is None:
        parser.error("--train is required (or --smoke)")
    out = args.out.resolve()
    files = split(args.train.resolve(), out, args.holdout, args.seed)
    record = out / "recipes.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    for name in args.variants.split(","):
        key = f"{name}@{args.limit}"
        if key in results:
            continue
        run_dir = out / "recipes" / key
        cmd = ["recipe=seed", f"data.train={files['train']}", f"data.test={files['test']}", "data.test_labels=null", "fold=2",
               f"time_limit={args.limit}", *VARIANTS[name], *extra, f"hydra.run.dir={run_dir}"]
        print(f"{key}: python -m src.cv {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "src.cv", *cmd], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        if proc.returncode != 0:
            sys.exit(f"{key} failed (exit {proc.returncode})")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results[key] = {"overrides": VARIANTS[name], "seconds": round(time.perf_counter() - start, 1),
                        "cv_mean": metrics["cv_mean"], "oof_accuracy": metrics["oof_accuracy"],
                        "epochs": metrics.get("time_limit", {}).get("epochs"), "machine": machine()}
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(record)
    print("| variant | overrides | wall | epochs | mean CV | OOF |\n| --- | --- | --- | --- | --- | --- |")
    for key, r in results.items():
        print(f"| {key} | `{' '.join(r['overrides'])}` | {r['seconds'] / 60:.1f} min | {r['epochs']} | "
              f"{r['cv_mean']:.4f} | {r['oof_accuracy']:.4f} |")
    print(f"\nmachine: {'; '.join(sorted({r['machine'] for r in results.values()}))}")


if __name__ == "__main__":
    main()

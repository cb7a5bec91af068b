"""What a fold costs besides its epochs: `python -m src.cv` timed from process start to the
submission, and each fold's fixed cost (done.json's seconds minus the sum of its epochs' seconds
in history.csv) split into the phases done.json records.

    python benchmarks/bench_fold.py --train ../shared/data/digits/train.csv.gz --test ../shared/data/digits/test.csv.gz
    python benchmarks/bench_fold.py --smoke                    # seconds: 300 rows, 2 folds x 1 epoch
    python benchmarks/bench_fold.py --train ... --test ... --peer ../shared/peers/seed002_keras3.py   # + ~20 min

With `--peer NOTEBOOK`, the whole run is compared with the seed notebook's pipeline on the same
slice, one after the other: `python -m src.cv fold=4 epochs=4` (default jobs and threads) and
`python NOTEBOOK DATA_DIR OUT 4 4 4`, each timed from process start to its submission.csv.

The run is `fold=2 epochs=3 jobs=1 threads=1` (`--epochs`) on the first `--rows` (20,000) training rows (a
slice written once under `--out`), and the test file's first `--test-rows` (all by default), so
the figures are one thread's, as a fold job of `jobs=auto` has on a 2-core machine. The phases:
build (clear the session, build and compile the model, restore, callbacks), fit's time outside
its epochs (the datasets, the per-epoch checkpoint writes), final_model (the best epoch's weights
loaded), predict (validation and test probabilities) and commit (model and predictions written).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from project import timed  # noqa: E402

TARGET = 3.0  # seconds of fixed cost per fold on the 20,000-row slice


def sliced(train: Path, test: Path, rows: int, test_rows: int | None, out: Path) -> tuple[Path, Path]:
    """The first `rows` of `train` and `test_rows` of `test`, written once under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"train_{rows}.csv", out / f"test_{test_rows or 'all'}.csv"
    if not paths[0].exists():
        pd.read_csv(train, nrows=rows).to_csv(paths[0], index=False)
    if not paths[1].exists():
        pd.read_csv(test, nrows=test_rows).to_csv(paths[1], index=False)
    return paths


def fold_costs(run_dir: Path) -> list[dict]:
    """Per fold: done.json's seconds, the sum of the epochs' seconds, their difference and phases."""
    found = []
    for fold_dir in sorted(run_dir.glob("fold_*")):
        done = json.loads((fold_dir / "done.json").read_text())
        epochs = pd.read_csv(fold_dir / "history.csv")["seconds"]
        phases = dict(done.get("phases_s", {}))
        if "fit" in phases:
            phases["fit outside epochs"] = round(phases.pop("fit") - float(epochs.sum()), 3)
        found.append({"fold": done["fold"], "seconds": done["seconds"], "epochs_s": [round(float(s), 2) for s in epochs],
                      "fixed_s": round(done["seconds"] - float(epochs.sum()), 2), "phases_s": phases})
    return found


def run(train: Path, test: Path, out: Path, epochs: int, extra: list[str], warm: bool = True) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=out))  # a fresh run each time: never a finished one
    common = ["recipe=seed", f"data.train={train}", f"data.test={test}", "data.test_labels=null", f"data.cache_dir={out / 'cache'}",
              "fold=2", "jobs=1", "threads=1", "verbose=false", *extra]
    args = [*common, f"epochs={epochs}", f"hydra.run.dir={run_dir}"]
    if warm:  # the parse cache, so that the timed run does not parse
        timed([sys.executable, "-m", "src.cv", *common, "epochs=1", "fold_index=0", f"hydra.run.dir={out / 'warm'}"],
              "src.cv (warming the parse cache)")
    wall, _ = timed([sys.executable, "-m", "src.cv", *args], "src.cv")
    return {"wall_s": round(wall, 1), "folds": fold_costs(run_dir), "args": args}


def whole_runs(train: Path, test: Path, out: Path, peer: Path, folds: int = 4, epochs: int = 4) -> dict:
    """The project's whole run and the notebook's on the same files, start to submission."""
    data = out / "peer_data"
    data.mkdir(parents=True, exist_ok=True)
    for name, source in (("train.csv", train), ("test.csv", test)):
        if not (data / name).exists():
            (data / name).symlink_to(source)
    found = {}
    whole = Path(tempfile.mkdtemp(prefix="whole-", dir=out))
    commands = {
        "project": [sys.executable, "-m", "src.cv", "recipe=seed", f"data.train={train}", f"data.test={test}", "data.test_labels=null",
                    f"data.cache_dir={out / 'whole_cache'}", f"fold={folds}", f"epochs={epochs}", "verbose=false",
                    f"hydra.run.dir={whole / 'run'}"],
        "notebook": [sys.executable, str(peer), str(data), str(whole / "notebook"), str(folds), str(epochs), str(folds)],
    }
    for name, command in commands.items():
        seconds, proc = timed(command, name)
        found[name] = {"seconds": round(seconds, 1), "tail": proc.stdout.strip().splitlines()[-1:]}
        print(f"{name}: {found[name]['seconds']:.1f} s  {' '.join(found[name]['tail'])}", flush=True)
    metrics = json.loads((whole / "run" / "metrics.json").read_text())
    found["project"]["cv_mean"] = metrics["cv_mean"]
    found["speedup"] = round(found["notebook"]["seconds"] / found["project"]["seconds"], 2)
    print(f"fold={folds} epochs={epochs}: the project {found['project']['seconds']:.0f} s (CV {metrics['cv_mean']:.4f}), "
          f"the notebook {found['notebook']['seconds']:.0f} s: {found['speedup']:.2f}x (target >= 5x)")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path)
    ap.add_argument("--test", type=Path)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--test-rows", type=int)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, help="where the slice and the run go (default: a temporary dir)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true", help="seconds: 300 rows of the embedded sample, 1 epoch")
    ap.add_argument("--peer", type=Path, help="the seed notebook's script: also compare the whole runs")
    ap.add_argument("overrides", nargs="*", help="more overrides for src.cv, e.g. tensorboard=false")
    args = ap.parse_args()
    host = machine.machine(measure=False)
    print(f"machine: {machine.describe(host)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_fold_") as tmp:
        out = (args.out or Path(tmp)).resolve()
        epochs = 1 if args.smoke else args.epochs
        if args.smoke:
            import project

            train, test = project.tiny_csvs(out / "tiny")
        elif args.train and args.test:
            train, test = sliced(args.train.resolve(), args.test.resolve(), args.rows, args.test_rows, out)
        else:
            ap.error("--train and --test are required (or --smoke)")
        result = run(train, test, out, epochs, list(args.overrides), warm=not args.smoke)
        if args.peer:
            result["whole"] = whole_runs(train, test, out, args.peer.resolve())
    fixed = [f["fixed_s"] for f in result["folds"]]
    for f in result["folds"]:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in f["phases_s"].items())
        print(f"fold {f['fold']}: {f['seconds']:.1f} s, epochs {' + '.join(f'{s:.1f}' for s in f['epochs_s'])} s, "
              f"fixed {f['fixed_s']:.1f} s ({phases})")
    print(f"whole run {result['wall_s']:.1f} s (process start to submission); fixed cost per fold: median "
          f"{statistics.median(fixed):.1f} s (target <= {TARGET:g} s on the 20,000-row slice)")
    if args.json:
        args.json.write_text(json.dumps({**result, "machine": host, "fixed_median_s": statistics.median(fixed)}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Parallel fold jobs vs one process training the folds one after another, on this machine.

    python benchmarks/bench_parallel.py                                   # data=sample, 2 folds x 2 epochs
    python benchmarks/bench_parallel.py --train ../shared/data/digits/train.csv.gz \\
        --test ../shared/data/digits/test.csv.gz --fold 2 --epochs 1 --repeats 1

Three ways to train the same N folds (N = --jobs, default the core count), each into a fresh
run dir, timed end to end (process start to the ensemble written):

    sequential    python -m src.cv fold=N                              (one process, all cores)
    parallel      python -m src.cv -m fold_index=0..N-1 hydra/launcher=joblib hydra.launcher.n_jobs=N
                                                                       (threads=auto: cores // N each)
    uncapped      the same, with threads=<cores> in every process (what happens without the cap)

The parse cache is warmed first so that no variant pays for parsing the CSVs. Prints a table of
median wall times and the speed-up sequential / parallel; --json writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "src.cv", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: src.cv {' '.join(args)}\n{proc.stderr[-3000:]}")
    return seconds


def complete(root: Path) -> bool:
    found = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
    return len(found) == 1 and found[0]["complete"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--jobs", type=int, default=cores, help="folds trained at once (default: the core count)")
    parser.add_argument("--fold", type=int, default=None, help="folds in the split (default: --jobs)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", help="train CSV (default: the embedded sample)")
    parser.add_argument("--test", help="test CSV (with --train)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    folds = args.fold or args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = [f"data.train={args.train}", f"data.test={args.test}"] if args.train else ["data=sample"]
        common = [*data, f"data.cache_dir={tmp / 'cache'}", f"fold={folds}", f"epochs={args.epochs}", "verbose=false"]
        run([*common, "epochs=1", "fold_index=0", f"hydra.run.dir={tmp / 'warm'}"])  # fills the parse cache

        sweep = ["-m", "fold_index=" + ",".join(map(str, range(args.jobs))), "hydra/launcher=joblib",
                 f"hydra.launcher.n_jobs={args.jobs}"]
        if args.jobs != folds:
            print(f"note: {args.jobs} parallel jobs train folds 0..{args.jobs - 1} of {folds}; sequential trains the same")
        variants = {
            "sequential": lambda d: [*common, f"fold_index=[{','.join(map(str, range(args.jobs)))}]", f"hydra.run.dir={d}"],
            "parallel": lambda d: [*sweep, *common, f"hydra.sweep.dir={d}"],
            "uncapped": lambda d: [*sweep, *common, f"threads={cores}", f"hydra.sweep.dir={d}"],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.repeats):
            for name, make in variants.items():
                out = tmp / f"{name}-{r}"
                times[name].append(run(make(out)))
                if not complete(out) and args.jobs == folds:
                    sys.exit(f"{name}: no complete ensemble in {out}")
                print(f"  {name:<10} repeat {r + 1}: {times[name][-1]:.1f} s", flush=True)

    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{args.jobs} fold(s) x {args.epochs} epoch(s) on {cores} core(s), {'given data' if args.train else 'data=sample'}, "
          f"median of {args.repeats}")
    print(f"{'variant':<12}{'wall s':>8}{'vs sequential':>15}")
    for name, seconds in med.items():
        print(f"{name:<12}{seconds:>8.1f}{med['sequential'] / seconds:>14.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "jobs": args.jobs, "epochs": args.epochs,
                                               "data": args.train or "sample", "seconds": times, "median": med}, indent=2))


if __name__ == "__main__":
    main()

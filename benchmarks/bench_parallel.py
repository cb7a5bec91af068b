"""How many folds to train at once: `python -m src.cv jobs=N` for every N up to the core count,
and `jobs=auto`, timed end to end on this machine.

    python benchmarks/bench_parallel.py                                   # data=sample, cores x 2 folds x 2 epochs
    python benchmarks/bench_parallel.py --train ../shared/data/digits/train.csv.gz \\
        --test ../shared/data/digits/test.csv.gz --fold 2 --epochs 2

Every variant trains the same folds into a fresh run dir and is timed from process start to the
ensemble written:

    jobs=1        one process, the folds one after another, TensorFlow on all cores
    jobs=1 threads=1  the same on one core (the 1 x 1 row: what one job of jobs=cores gets)
    jobs=N        N fold-job processes at once, each with cores // N TensorFlow threads
    jobs=N uncapped   the same with every process on all cores (what the thread cap avoids)
    jobs=auto     what a plain `python -m src.cv` does (one fold job per core on a CPU-only machine)

The parse cache is warmed first so that no variant pays for parsing the CSVs. Prints the median
wall time of each, its speed-up over jobs=1, and whether auto's choice is the fastest count.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import joblib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from project import timed  # noqa: E402


def run(args: list[str]) -> float:
    return timed([sys.executable, "-m", "src.cv", *args], f"src.cv {' '.join(args)}")[0]


def complete(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.exists() and json.loads(metrics.read_text())["complete"]


def auto_jobs(run_dir: Path) -> int:
    """How many fold jobs `jobs=auto` ran at once, from the run's log."""
    found = re.search(r"(\d+) fold jobs at once", (run_dir / "cv.log").read_text())
    return int(found[1]) if found else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = joblib.cpu_count()
    parser.add_argument("--fold", type=int, default=cores, help="folds in the split, all trained (default: the core count)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", help="train CSV (default: the embedded sample)")
    parser.add_argument("--test", help="test CSV (with --train)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--smoke", action="store_true", help="seconds: jobs=auto alone, 2 folds x 1 epoch of 300 rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.smoke:
            import project

            args.train, args.test = project.tiny_csvs(tmp / "data")
            args.fold, args.epochs, args.repeats = 2, 1, 1
        data = ["recipe=seed", f"data.train={args.train}", f"data.test={args.test}"] if args.train else ["data=sample"]
        common = [*data, f"data.cache_dir={tmp / 'cache'}", f"fold={args.fold}", f"epochs={args.epochs}", "verbose=false",
                  "tensorboard=false"]
        if not args.smoke:
            run([*common, "epochs=1", "fold_index=0", "jobs=1", f"hydra.run.dir={tmp / 'warm'}"])  # fills the parse cache

        variants = {f"jobs={n}": [f"jobs={n}"] for n in range(1, 1 + (0 if args.smoke else min(cores, args.fold)))}
        if cores > 1 and not args.smoke:  # one fold at a time on one core: what each job of jobs=cores has
            variants["jobs=1 threads=1"] = ["jobs=1", "threads=1"]
        if cores > 1 and args.fold > 1 and not args.smoke:
            variants[f"jobs={min(cores, args.fold)} uncapped"] = [f"jobs={min(cores, args.fold)}", f"threads={cores}"]
        variants["jobs=auto"] = ["jobs=auto"]
        times: dict[str, list[float]] = {name: [] for name in variants}
        chosen = 1
        for r in range(args.repeats):
            for name, extra in variants.items():
                out = tmp / f"{name.replace(' ', '_').replace('=', '')}-{r}"
                times[name].append(run([*common, *extra, f"hydra.run.dir={out}"]))
                if not complete(out):
                    sys.exit(f"{name}: no complete ensemble in {out}")
                if name == "jobs=auto":
                    chosen = auto_jobs(out)
                print(f"  {name:<16} repeat {r + 1}: {times[name][-1]:.1f} s", flush=True)

    med = {name: statistics.median(t) for name, t in times.items()}
    counts = {name: s for name, s in med.items() if re.fullmatch(r"jobs=\d+", name)}
    fastest = min(counts, key=counts.get) if counts else None
    print(f"\n{args.fold} fold(s) x {args.epochs} epoch(s) on {cores} core(s), {args.train or 'data=sample'}, "
          f"median of {args.repeats}")
    print(f"{'variant':<18}{'wall s':>8}{'vs jobs=1':>11}")
    for name, seconds in med.items():
        print(f"{name:<18}{seconds:>8.1f}" + (f"{med['jobs=1'] / seconds:>10.2f}x" if "jobs=1" in med else ""))
    verdict = ("the fastest" if fastest == f"jobs={chosen}" else f"not the fastest ({fastest} is)") if fastest else "no count beside it"
    print(f"jobs=auto ran {chosen} fold job(s) at once: {verdict} of the counts tried")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "fold": args.fold, "epochs": args.epochs,
                                               "data": str(args.train or "sample"), "seconds": times, "median": med,
                                               "auto_jobs": chosen, "fastest": fastest}, indent=2))


if __name__ == "__main__":
    main()

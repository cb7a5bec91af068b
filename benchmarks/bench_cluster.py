"""Fold jobs on each engine: the same run (`fold=4 epochs=2` on the digits data) with
`cluster=local` and `cluster=ray` (a two-node Ray cluster started here with ray.cluster_utils),
and `cluster=slurm` where a Slurm answers (`sbatch` on PATH, `SLURM_CONF` if it needs one), one
after another, alone on the machine. Per engine: the wall time, and each fold job's overhead, the
wall time less the fold's own training and prediction (done.json's seconds), spread over the
folds that ran at once; the local run's overhead is the baseline.

    python benchmarks/bench_cluster.py --train ../shared/data/digits/train.csv.gz --out ~/runs/bench_cluster
    python benchmarks/bench_cluster.py --smoke --out /tmp/bench_cluster   # seconds: 2 folds x 1 epoch on the embedded sample
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine as bench_machine  # noqa: E402


def run(engine: str, args: list[str], out: Path, env: dict[str, str]) -> dict:
    """One run on `engine` into out/<engine>: its wall time and the folds' own seconds."""
    run_dir = out / engine
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [sys.executable, "-m", "src.cv", *args, f"cluster={engine}", f"hydra.run.dir={run_dir}"]
    print(f"{engine}: {' '.join(argv[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{engine} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    folds = [json.loads(p.read_text()) for p in sorted(run_dir.glob("fold_*/done.json"))]
    return {"wall_s": round(wall, 1), "fold_s": [f["seconds"] for f in folds],
            "nodes": sorted({f["cluster"]["node_id"] for f in folds}), "cv_mean": json.loads((run_dir / "metrics.json").read_text())["cv_mean"]}


def overhead(result: dict, at_once: int) -> float:
    """Seconds per fold job beyond its fold's own work: (wall × folds at once − Σ fold seconds) / folds."""
    folds = len(result["fold_s"])
    return round((result["wall_s"] * min(at_once, folds) - sum(result["fold_s"])) / folds, 1)


def start_ray(tmp: Path):
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_TMPDIR", str(tmp))
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes(timeout=60)
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, help="a labelled train.csv(.gz); the test file is its first 2,000 rows' pixels")
    parser.add_argument("--out", type=Path, default=Path.home() / "runs" / "bench_cluster")
    parser.add_argument("--fold", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="seconds: 2 folds x 1 epoch on the embedded sample, local and Ray")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["recipe=seed", "tensorboard=false", "cluster.heartbeat_s=2"]
    if args.smoke:
        import project

        train, test = project.tiny_csvs(args.out / "source")
        common += [f"data.train={train}", f"data.test={test}", "fold=2", "epochs=1", "batch_size=32"]
    elif args.train:
        test = args.out / "test.csv"
        if not test.exists():
            import pandas as pd

            pd.read_csv(args.train, nrows=2000).drop(columns="label").to_csv(test, index=False)
        common += [f"data.train={args.train.resolve()}", f"data.test={test}", f"fold={args.fold}", f"epochs={args.epochs}"]
    else:
        parser.error("--train is required (or --smoke)")
    results = {"machine": bench_machine.describe(bench_machine.machine(measure=False))}
    results["local"] = run("local", common, args.out, {})
    cluster = start_ray(args.out / "ray_tmp")
    try:
        results["ray"] = run("ray", common + ["cluster.cpus_per_job=1"], args.out, {"RAY_ADDRESS": cluster.address})
    finally:
        cluster.shutdown()
    if shutil.which("sbatch") and not args.smoke:
        results["slurm"] = run("slurm", common + ["cluster.cpus_per_job=1", "cluster.poll_s=1"], args.out, {})
    cores = os.cpu_count() or 1
    for engine, at_once in (("local", cores), ("ray", 2), ("slurm", cores)):
        if engine in results:
            results[engine]["overhead_per_fold_s"] = overhead(results[engine], at_once)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"machine: {results['machine']}")
    for engine in ("local", "ray", "slurm"):
        if engine in results:
            r = results[engine]
            print(f"{engine}: wall {r['wall_s']} s, overhead per fold job {r['overhead_per_fold_s']} s, "
                  f"{len(r['nodes'])} node(s), CV {r['cv_mean']:.4f}")


if __name__ == "__main__":
    main()

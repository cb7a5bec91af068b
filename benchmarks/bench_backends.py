"""The same short training under TensorFlow and under Keras 3 on JAX, on this machine.

    python benchmarks/bench_backends.py              # 3 rounds, one thread each (a fold job's share on 2 cores)
    python benchmarks/bench_backends.py --threads 2  # all of a 2-core machine
    python benchmarks/bench_backends.py --smoke      # seconds: the script works (the suite runs it)

Each round trains the default recipe (conf/config.yaml: kfold_cnn, Adam, its schedule, batch 128,
augmented batches of the backend's own input path: src.inputs.tf_data or src.inputs.jax_data) in
the precision the runtime decides for the backend here, on the embedded sample's 4,000 digits, once
per backend, each in a fresh process of its own pinned to `--threads` cores, the backends
alternating. A process reports its steady rate: the median training images/s over the epochs
after the first (which compiles). Prints the median over rounds of each, the ratio, and the
machine (CPU model, cores, bf16/AMX); `--out FILE` writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax")


def cpu() -> str:
    """The CPU model and its bf16 units, from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    units = "AMX" if " amx_bf16" in flags else "AVX512_BF16" if " avx512_bf16" in flags else "no bf16 units"
    return f"{model}, {os.cpu_count()} cores, {units}"


def worker(args: argparse.Namespace) -> dict:
    """One backend's training in this process (KERAS_BACKEND set by the parent): its steady rate."""
    os.sched_setaffinity(0, set(range(args.threads)))
    sys.path.insert(0, str(REPO))
    import keras
    from hydra import compose, initialize_config_dir

    import src.inputs.dataset  # noqa: F401  (the data_dir resolver)
    import src.schema  # noqa: F401  (the schemas conf/ extends)
    from src.inputs import pipeline
    from src.inputs.folds import FoldData
    from src.runtime import Request
    from src.training import strategy
    from src.training.fold import Placement, compile_model

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=sample", "batch_size=128", f"data.cache_dir={args.cache}"])
    data = src.inputs.dataset.load(cfg.data)
    x, y = data.x_train[: args.rows], data.y_train[: args.rows]
    runtime = strategy.start(Request(backend=keras.backend.backend(), threads=args.threads, strategy="default"))
    fold = FoldData(0, x, y, x[:128], y[:128], None, x[:128], data.num_classes)
    model = compile_model(fold, cfg, Placement(runtime, strategy.make_strategy(runtime, cfg.strategy)))
    steps = pipeline.steps_per_epoch(len(x), cfg.batch_size)
    seconds: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seconds.append(-time.perf_counter()),
                                           on_epoch_end=lambda e, logs: seconds.append(seconds.pop() + time.perf_counter()))
    model.fit(pipeline.train_dataset(x, y, cfg.augment, cfg.batch_size, data.num_classes, cfg.seed),
              epochs=args.epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    rates = [steps * cfg.batch_size / s for s in seconds[1:]]
    return {"backend": runtime.backend, "precision": runtime.precision, "jit_compile": str(model.jit_compile),
            "images_per_s": statistics.median(rates), "first_epoch_s": seconds[0]}


def run_one(backend: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend == "jax" and args.threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    argv = [sys.executable, __file__, "--worker", "--threads", str(args.threads), "--rows", str(args.rows),
            "--epochs", str(args.epochs), "--cache", str(args.cache)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{backend}: the worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=REPO / "data" / "cache")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="1 round, 512 rows, 2 epochs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.smoke:
        args.rounds, args.rows, args.epochs = 1, 512, 2
    runs = {b: [] for b in BACKENDS}
    for _ in range(args.rounds):
        for backend in BACKENDS:
            runs[backend].append(run_one(backend, args))
    result = {"machine": cpu(), "threads": args.threads, "rows": args.rows, "epochs": args.epochs, "rounds": args.rounds,
              **{b: {**r[-1], "images_per_s": statistics.median(x["images_per_s"] for x in r)} for b, r in runs.items()}}
    result["jax_over_tensorflow"] = result["jax"]["images_per_s"] / result["tensorflow"]["images_per_s"]
    print(f"{result['machine']}; {args.threads} thread(s), batch 128, {args.rows} rows, median of {args.rounds} round(s)")
    for b in BACKENDS:
        r = result[b]
        print(f"  {b:<10} {r['precision']:<15} XLA {r['jit_compile']:<5} {r['images_per_s']:>8,.0f} training images/s "
              f"(first epoch {r['first_epoch_s']:.1f} s)")
    print(f"  JAX / TensorFlow: {result['jax_over_tensorflow']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

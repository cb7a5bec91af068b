"""Where one fold's training step spends its time: TensorFlow's profiler over real training
steps, summed by op class, and the step rate of the variants that could remove a cost.

    pip install xprof                    # TensorFlow's profile converter (for the breakdown only)
    python benchmarks/bench_step.py      # embedded sample, threads = a fold job's share under jobs=auto

1. profile    the default model (kfold_cnn, Adam, batch 128, the run's precision) fit on the real
              augmented `train_dataset` for `--steps` steps after a warm-up epoch, under
              `tf.profiler.experimental`; the op self-times (xprof's framework_op_stats) summed by
              class: convolutions forward, backward to the input, backward to the filter, BatchNorm,
              dropout (its random numbers and mask), ReLU, optimizer update, input pipeline (it runs
              on its own threads), the rest; and the wall time not covered by the step's ops
              (Python, callbacks, waiting for input).
2. variants   the steady training rate (median epoch after a warm-up epoch) of the same model
              and of candidate changes, each in a fresh process so environment options apply:
              steps_per_execution=8, tf.data without determinism and with a private thread pool,
              oneDNN's blocked memory formats (TF_ENABLE_MKL_NATIVE_FORMAT=0), TensorFlow's Eigen
              kernels instead of oneDNN (TF_ENABLE_ONEDNN_OPTS=0, what TensorFlow picks by itself on
              a CPU without AVX512_VNNI/BF16 or AMX), NCHW convolutions (a variant this machine
              cannot run is said so and skipped),
              and, to size the costs, no dropout and no BatchNorm (not candidates: they change the
              model).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TRAIN_FLOP = 3 * 30.3e6  # per image of kfold_cnn: forward + two backward matmuls (bench_train counts it)

CLASSES = (  # (class, test on (op type, op name)); the first that matches
    ("conv backward, filter", lambda t, n: "Conv2DBackpropFilter" in t),
    ("conv backward, input", lambda t, n: "Conv2DBackpropInput" in t),
    ("conv forward", lambda t, n: "Conv2D" in t),
    ("BatchNorm", lambda t, n: "BatchNorm" in t),
    ("dropout", lambda t, n: "dropout" in n.lower()),
    ("ReLU", lambda t, n: "Relu" in t),
    ("optimizer update", lambda t, n: "/adam/" in n.lower() or "/optimizer/" in n.lower()),
    ("input pipeline", lambda t, n: not n.startswith("StatefulPartitionedCall")),
    ("dense, loss, metrics, rest", lambda t, n: True),
)
VARIANTS = {
    "as run": ({}, {}),
    "steps_per_execution=8": ({"steps_per_execution": 8}, {}),
    "tf.data: not deterministic, private pool": ({"data_options": True}, {}),
    "oneDNN blocked formats": ({}, {"TF_ENABLE_MKL_NATIVE_FORMAT": "0"}),
    "Eigen kernels (TF_ENABLE_ONEDNN_OPTS=0)": ({}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "NCHW convolutions": ({"channels_first": True}, {}),
    "(no dropout)": ({"dropout": 0.0}, {}),
    "(no BatchNorm)": ({"batchnorm": False}, {}),
}


def setup(threads: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    import project
    from src.training.strategy import request, start

    cfg = project.compose(["data=sample"])
    x, y = project.train_arrays(cfg)
    precision = start(request(cfg)).precision
    keras.mixed_precision.set_global_policy(precision)
    return cfg, x, y, precision


def build(cfg, variant: dict):
    """The default model, or a variant of it, compiled as src.training.fold.build does."""
    import keras
    from hydra.utils import instantiate
    from keras import layers

    from src.models.layers import FusedBatchNorm

    if not {"channels_first", "dropout", "batchnorm"} & variant.keys():
        model = instantiate(cfg.model)(input_shape=(28, 28, 1), num_classes=10)
    else:
        fmt = "channels_first" if variant.get("channels_first") else "channels_last"
        dropout, bn = variant.get("dropout", cfg.model.dropout), variant.get("batchnorm", True)
        inputs = keras.Input(shape=(28, 28, 1))
        h = layers.Rescaling(1 / 255)(inputs)
        if fmt == "channels_first":
            h = layers.Permute((3, 1, 2))(h)

        def conv(h, filters, kernel, strides=1, padding="valid"):
            h = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, data_format=fmt)(h)
            if bn:
                h = FusedBatchNorm(momentum=0.9)(h) if fmt == "channels_last" else layers.BatchNormalization(axis=1, momentum=0.9)(h)
            return layers.Activation("relu")(h)

        for filters in (32, 64):
            h = conv(conv(conv(h, filters, 3), filters, 3), filters, 5, 2, "same")
            h = layers.Dropout(dropout)(h) if dropout else h
        h = layers.Flatten()(conv(h, 128, 4))
        h = layers.Dropout(dropout)(h) if dropout else h
        model = keras.Model(inputs, layers.Dense(10, activation="softmax", dtype="float32")(h))
    model.compile(optimizer=instantiate(cfg.optimizer)(), loss=cfg.loss,
                  weighted_metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  steps_per_execution=variant.get("steps_per_execution", 1))
    return model


def dataset(cfg, x, y, variant: dict):
    import tensorflow as tf

    from src.inputs import pipeline

    ds = pipeline.train_dataset(x, y, cfg.augment, 128, 10, cfg.seed)
    if variant.get("data_options"):
        options = tf.data.Options()
        options.deterministic = False
        options.threading.private_threadpool_size = 1
        ds = ds.with_options(options)
    return ds


def rate(threads: int, variant: dict, steps: int, epochs: int) -> float:
    """Median images/s of the training epochs after the first."""
    import keras

    cfg, x, y, _ = setup(threads)
    model, ds = build(cfg, variant), dataset(cfg, x, y, variant)
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(ds, epochs=epochs + 1, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
    steady = sorted(seconds[1:])
    return steps * 128 / steady[len(steady) // 2]


def profile(threads: int, steps: int) -> dict:
    import tensorflow as tf
    from xprof.convert import raw_to_tool_data

    cfg, x, y, precision = setup(threads)
    model, ds = build(cfg, {}), dataset(cfg, x, y, {})
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        (path,) = glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")
        table = json.loads(raw_to_tool_data.xspace_to_tool_data([path], "framework_op_stats", {})[0])[0]
    cols = [c["id"] for c in table["cols"]]
    seconds = collections.Counter()
    step_ops = 0.0
    for row in (dict(zip(cols, [c.get("v") for c in r["c"]])) for r in table["rows"]):
        if row["type"] == "IDLE":
            continue
        name = next(c for c, test in CLASSES if test(row["type"], row["operation"]))
        seconds[name] += row["total_self_time"] / 1e6
        if name != "input pipeline":
            step_ops += row["total_self_time"] / 1e6
    seconds["outside the step's ops (Python, callbacks, waiting)"] = max(wall - step_ops, 0.0)
    return {"precision": precision, "threads": threads, "steps": steps, "wall_s": wall,
            "images_per_s": steps * 128 / wall, "seconds": dict(seconds)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads (default 1: a fold job's share under jobs=auto)")
    p.add_argument("--steps", type=int, default=62)
    p.add_argument("--epochs", type=int, default=4, help="timed epochs per variant (after one warm-up epoch)")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: measure one variant in this process
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--smoke", action="store_true", help="seconds: 3 steps, 1 timed epoch, the model as run, no profile")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.epochs = 3, 1
    if args.variant:
        print(json.dumps({"images_per_s": rate(args.threads, VARIANTS[args.variant][0], args.steps, args.epochs)}))
        return

    import machine

    host = machine.smoke_or_full(args.smoke)
    dtype = machine.run_dtype(host)
    limit = machine.matmul_limit(host, args.threads, dtype)
    print(f"machine: {machine.describe(host)}", flush=True)
    breakdown = None
    try:
        if args.smoke:
            raise ImportError
        import xprof  # noqa: F401
    except ImportError:
        print("xprof is not installed (pip install xprof): the per-op breakdown is left out")
    else:
        breakdown = profile(args.threads, args.steps)
        total = sum(breakdown["seconds"].values())
        print(f"profile: {breakdown['steps']} steps of batch 128, {breakdown['precision']}, {args.threads} thread(s): "
              f"{breakdown['wall_s']:.2f} s wall, {breakdown['images_per_s']:,.0f} img/s under the profiler")
        for name, s in sorted(breakdown["seconds"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<52} {s:7.3f} s {100 * s / total:5.1f}%")

    rates = {}
    for name, (_, env) in list(VARIANTS.items())[: 1 if args.smoke else None]:
        proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--steps", str(args.steps),
                               "--epochs", str(args.epochs), "--variant", name], capture_output=True, text=True,
                              env={**os.environ, **env})
        if proc.returncode != 0:  # a variant this machine cannot run (NCHW convolutions on a CPU): said, not fatal
            errors = [line for line in proc.stderr.splitlines() if "Error" in line or "only supports" in line]
            print(f"  {name:<44} failed: {(errors or proc.stderr.splitlines() or ['?'])[-1].strip()[:120]}", flush=True)
            continue
        rates[name] = json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"]
        print(f"  {name:<44} {rates[name]:8,.0f} img/s  {rates[name] / rates['as run']:.2f}x  "
              f"{rates[name] * TRAIN_FLOP / 1e9 / limit:6.1%} of the {dtype} matmul limit", flush=True)
    print(f"(limit: {limit:,.0f} GFLOP/s {dtype} matmul on {args.threads} thread(s), {TRAIN_FLOP / 1e6:.0f} MFLOP per training image)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": host, "threads": args.threads, "limit_dtype": dtype, "limit_gflops": limit,
                                               "profile": breakdown, "variants": rates}, indent=2) + "\n")


if __name__ == "__main__":
    main()

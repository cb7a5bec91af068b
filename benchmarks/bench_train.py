"""Throughput benchmark: matmul rate, augmentation pipeline, and training inside a real fold.

    python benchmarks/bench_train.py [--data PATH/train.csv(.gz)] [--repeats 3] [--json OUT]

Everything runs in one process, in this order:

1. matmul     fp32 `tf.linalg.matmul` of two 2048x2048 matrices (2*n^3 FLOP a call): a few
              warm-up calls, then max(`--repeats`, 5) timed calls; GFLOP/s. The machine's ceiling.
              Measured again after training (a shared machine may be busy for one of the two);
              the table pools both, the FLOP fraction divides by the larger of the two medians.
2. augment    `src.inputs.pipeline.train_dataset` over uint8 images at the training batch (128), with the
              augmentation of conf/augment/default.yaml on, and again with it off (cast + one-hot
              only), so the cost of the affine transform itself shows. Each repeat times
              `--aug-batches` batches pulled from the iterator after a warm-up; images/s.
3. train      `src.training.fold.train_fold` itself, on fold 1 of the composed config's K-fold split
              (conf defaults: model=kfold_cnn, optimizer=adam, augment=default, strategy=default,
              batch 128), writing its fold dir to a temp dir that is deleted afterwards. The fold's
              rows are capped (`--train-images`, `--val-images`; the "test" set is the first 256
              validation rows) so the whole benchmark stays near 3 minutes. Epochs are timed by
              a callback appended to the `fit` call that `train_fold` makes (a temporary wrapper
              around `keras.Model.fit`; nothing in src/ changes): from `on_epoch_begin` to the
              start of validation (`on_test_begin`), i.e. the training steps alone. The first
              epoch (tracing) is dropped; median/min/max are over the others. "train+val" is the
              same epochs timed to `on_epoch_end`, so it also holds validation and the checkpoint.
4. FLOPs      the built model's forward FLOP per image, counted from its layers (2 * MACs of
              Conv2D and Dense; BatchNorm, activations, dropout ignored); training ~ 3x forward.
              "train FLOP / matmul" = train images/s * training FLOP/image / matmul FLOP/s (larger median).

`--diagnose` adds rows that explain a shortfall (model built and compiled as src/train.py does,
fit directly, not through train_fold): the model fit on batches already in memory (no tf.data
map, no augmentation: the model's own ceiling), fit on the real augmented `train_dataset` with
tf.data's `deterministic=False` option, and fit under Keras' `mixed_bfloat16` policy.

Data: `--data` reads a competition train CSV as `python -m src.cv` does (through the parse cache);
without it the embedded sample (conf data=sample, written on first use) is used. The machine line
(benchmarks/machine.py) comes first, with the matmul limits on one thread and on all, each
measured in its own process. `--smoke` runs every part on 256 rows in seconds (the suite runs it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import machine as bench_machine  # noqa: E402
import project  # noqa: E402
from src.inputs import pipeline  # noqa: E402
from src.inputs.folds import FoldData, make_folds  # noqa: E402
from src.training.callbacks import RunClock  # noqa: E402
from src.training.fold import Placement, train_fold  # noqa: E402
from src.training.strategy import check_batch, make_strategy, request, start  # noqa: E402

TARGET_TRAIN = 2_000.0  # images/s
TARGET_AUG = 40_000.0  # images/s
TARGET_WHOLE = {True: 3_500.0, False: 2_500.0}  # whole-run images/s, on a 2-core CPU with bf16 / without
N_TEST = 256  # rows train_fold predicts as its "test" set


# ---------------------------------------------------------------------------------------------
# config and data

def compose_cfg(sample: bool, batch_size: int, epochs: int, extra: list[str] = ()) -> DictConfig:
    overrides = [*extra,
        f"data={'sample' if sample else 'digits'}",
        "strategy=default",
        f"batch_size={batch_size}",
        f"epochs={epochs}",
        "verbose=false",
    ]
    return project.compose(overrides)


def load_train(cfg: DictConfig, data: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    x, y = project.train_arrays(cfg, data)
    if cfg.data.get("num_classes") is None:  # the data set's own count, as src.cv finds it
        OmegaConf.update(cfg, "data.num_classes", int(y.max()) + 1)
    return x, y, str(data or cfg.data.train)


# ---------------------------------------------------------------------------------------------
# measurements

def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def bench_matmul(n: int, repeats: int, warmup: int = 3, dtype: str = "float32") -> dict:
    a = tf.cast(tf.random.stateless_uniform((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform((n, n), seed=(3, 4)), dtype)
    for _ in range(warmup):
        tf.linalg.matmul(a, b).numpy()
    rates = []
    for _ in range(max(repeats, 5)):
        t = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()  # .numpy() waits for the result
        rates.append(2.0 * n**3 / (time.perf_counter() - t) / 1e9)
    return stats(rates)


def bench_pipeline(ds: tf.data.Dataset, batch_size: int, batches: int, repeats: int, warmup: int = 10) -> dict:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batches * batch_size / (time.perf_counter() - t))
    return stats(rates)


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch's training steps (begin -> validation start) and of the whole epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.train_s: list[float] = []
        self.epoch_s: list[float] = []
        self._start = self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.train_s.append((self._train_end or now) - self._start)
        self.epoch_s.append(now - self._start)
        self._start = None


@contextlib.contextmanager
def timed_fit(timer: keras.callbacks.Callback):
    """Append `timer` to the callbacks of every `keras.Model.fit` call made inside the block."""
    own = "fit" in vars(keras.Model)
    original = keras.Model.fit

    def fit(self, *args, callbacks=None, **kwargs):
        return original(self, *args, callbacks=[*(callbacks or []), timer], **kwargs)

    keras.Model.fit = fit
    try:
        yield
    finally:
        if own:
            keras.Model.fit = original
        else:
            del keras.Model.fit


def rates(seconds: list[float], images_per_epoch: int) -> dict:
    steady = seconds[1:] or seconds  # the first epoch traces the step function
    return stats([images_per_epoch / s for s in steady])


def bench_train_fold(cfg, x, y, train_images: int, val_images: int) -> tuple[dict, dict, dict]:
    runtime = start(request(cfg))
    place = Placement(runtime, make_strategy(runtime, cfg.strategy))
    check_batch(cfg.batch_size, runtime.replicas)
    precision = runtime.precision
    tr, va = make_folds(y, cfg.fold, cfg.split, cfg.seed, cfg.val_fraction)[0]
    tr, va = tr[:train_images], va[:val_images]
    data = FoldData(1, x[tr], y[tr], x[va], y[va], va, x[va[:N_TEST]], int(cfg.data.num_classes))
    steps = pipeline.steps_per_epoch(len(tr), cfg.batch_size)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="bench_fold_") as tmp, timed_fit(timer):
        result = train_fold(data, cfg, place, Path(tmp) / "fold_1", RunClock(cfg.epochs))
    per_epoch = steps * cfg.batch_size
    info = {"precision": precision, "train_rows": len(tr), "val_rows": len(va), "steps_per_epoch": steps, "epochs": cfg.epochs,
            "epoch_train_s": timer.train_s, "epoch_total_s": timer.epoch_s,
            "val_accuracy": result.accuracy, "fold_seconds": result.seconds}
    return rates(timer.train_s, per_epoch), rates(timer.epoch_s, per_epoch), info


def build_compiled(cfg, input_shape, num_classes: int) -> keras.Model:
    """The model exactly as src/training/fold.py builds and compiles it."""
    strategy = make_strategy(start(request(cfg)), cfg.strategy)
    with strategy.scope():
        model = instantiate(cfg.model)(input_shape=input_shape, num_classes=num_classes)
        model.compile(optimizer=instantiate(cfg.optimizer)(), loss="categorical_crossentropy", weighted_metrics=["accuracy"])
    return model


def forward_flops(model: keras.Model) -> tuple[int, list[tuple[str, int]]]:
    """2 * multiply-accumulates of every Conv2D and Dense layer, per image."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            _, h, w, cout = layer.output.shape
            rows.append((layer.name, 2 * h * w * cout * kh * kw * cin))
        elif isinstance(layer, keras.layers.Dense):
            rows.append((layer.name, 2 * layer.input.shape[-1] * layer.units))
    return sum(f for _, f in rows), rows


def bench_fit(model: keras.Model, ds: tf.data.Dataset, steps: int, epochs: int, batch_size: int) -> dict:
    timer = EpochTimer()
    model.fit(ds, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0)
    return rates(timer.train_s, steps * batch_size)


def diagnose(cfg, x, y, train_images: int, epochs: int) -> dict:
    """The model's ceiling (in-memory batches), and the real pipeline with deterministic=False
    and under the mixed_bfloat16 policy (CPUs with AVX512_BF16/AMX run bf16 matmuls ~2x faster)."""
    n = min(train_images, len(x))
    bs, nc = cfg.batch_size, int(cfg.data.num_classes)
    steps = pipeline.steps_per_epoch(n, bs)
    out = {}
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    xs = tf.constant(x[: steps * bs].astype(np.float32))
    ys = tf.one_hot(y[: steps * bs], nc)
    plain = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(bs, drop_remainder=True).cache().repeat()
    out["train, in-memory batches (no aug)"] = bench_fit(build_compiled(cfg, x.shape[1:], nc), plain, steps, epochs, bs)
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    options = tf.data.Options()
    options.deterministic = False
    ds = pipeline.train_dataset(x[:n], y[:n], cfg.augment, bs, nc, cfg.seed).with_options(options)
    out["train, aug, deterministic=False"] = bench_fit(build_compiled(cfg, x.shape[1:], nc), ds, steps, epochs, bs)
    keras.backend.clear_session()  # clear_session also resets the dtype policy, so set it after
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        ds = pipeline.train_dataset(x[:n], y[:n], cfg.augment, bs, nc, cfg.seed)
        out["train, aug, mixed_bfloat16"] = bench_fit(build_compiled(cfg, x.shape[1:], nc), ds, steps, epochs, bs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return out


def whole_run(train: str, test: str, folds: int = 5, epochs: int = 10, extra: tuple[str, ...] = ()) -> dict:
    """`python -m src.cv fold=5 epochs=10` with the default `jobs`, timed from process start to
    the submission written; trained images/s = folds x epochs x steps x batch / wall seconds."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bench_whole_") as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "src.cv", "recipe=seed", f"fold={folds}", f"epochs={epochs}", f"data.train={train}",
                               f"data.test={test}", f"hydra.run.dir={run_dir}", *extra], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not (run_dir / "submission.csv").exists():
            sys.exit(f"whole run failed:\n{proc.stderr[-3000:]}")
        record = json.loads((run_dir / "run.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        log_text = (run_dir / "cv.log").read_text()
    rows, batch = record["rows"]["train"], record["resolved_config"]["batch_size"]
    train_rows = rows - rows // folds
    images = folds * epochs * (train_rows // batch) * batch
    jobs = next((line.split(" fold jobs at once")[0].rsplit(", ", 1)[-1] for line in log_text.splitlines()
                 if " fold jobs at once" in line), "1")
    return {"seconds": seconds, "images": images, "images_per_s": images / seconds, "cv_mean": metrics["cv_mean"],
            "oof_accuracy": metrics["oof_accuracy"], "jobs": jobs}


# ---------------------------------------------------------------------------------------------
# report

def table(rows: list[tuple[str, dict | None, str, str]]) -> str:
    lines = [f"{'metric':<44} {'median':>12} {'min':>12} {'max':>12}  {'target':<18}"]
    lines.append("-" * len(lines[0]))
    for name, s, unit, target in rows:
        if s is None:
            lines.append(f"{name:<44} {unit:>12}")
            continue
        fmt = (lambda v: f"{v:,.3f}") if unit == "fraction" else (lambda v: f"{v:,.0f}") if unit == "img/s" else (lambda v: f"{v:,.1f}")
        lines.append(f"{name + ' (' + unit + ')':<44} {fmt(s['median']):>12} {fmt(s['min']):>12} {fmt(s['max']):>12}  {target:<18}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="competition train CSV (.csv or .csv.gz); default: the embedded sample")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of matmul and augmentation (median reported)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch for augmentation and training")
    p.add_argument("--epochs", type=int, default=6, help="training epochs; the first is dropped as warm-up")
    p.add_argument("--train-images", type=int, default=4096, help="cap on the fold's training rows")
    p.add_argument("--val-images", type=int, default=1024, help="cap on the fold's validation rows")
    p.add_argument("--aug-batches", type=int, default=100, help="batches timed per augmentation repeat")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the run's config, e.g. precision=mixed_bfloat16")
    p.add_argument("--diagnose", action="store_true", help="also time fit on in-memory batches, with deterministic=False, and under mixed_bfloat16")
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow threads for everything measured (default: all cores; a fold job of jobs=auto has cores // jobs)")
    p.add_argument("--whole-run", nargs=2, metavar=("TRAIN", "TEST"),
                   help="also time `python -m src.cv fold=5 epochs=10` on these files, process start to submission")
    p.add_argument("--whole-run-baseline", action="store_true",
                   help="with --whole-run: also time it with jobs=1 (the folds one after another), after the default")
    p.add_argument("--json", metavar="OUT", help="write every figure as JSON")
    p.add_argument("--smoke", action="store_true", help="seconds: 256 rows, 2 epochs, 256 x 256 matmuls (the suite runs it)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.epochs, args.train_images, args.val_images, args.aug_batches, args.matmul_n = 1, 2, 256, 128, 3, 256
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is dropped)")

    t0 = time.perf_counter()
    cfg = compose_cfg(args.data is None, args.batch_size, args.epochs, args.overrides)
    x, y, source = load_train(cfg, args.data)
    nc = int(cfg.data.num_classes)
    host = bench_machine.smoke_or_full(args.smoke)
    print(f"machine: {bench_machine.describe(host)}\ndata {source}: {len(x):,} images {x.shape[1:]}; "
          f"GPUs {len(tf.config.list_physical_devices('GPU'))}", flush=True)

    precision = start(request(cfg)).precision
    dtype = "bfloat16" if "bfloat16" in precision else "float16" if "float16" in precision else "float32"
    mm32 = bench_matmul(args.matmul_n, args.repeats)
    mm = bench_matmul(args.matmul_n, args.repeats, dtype=dtype) if dtype != "float32" else mm32
    print(f"matmul {args.matmul_n}: {mm32['median']:,.1f} GFLOP/s float32, {mm['median']:,.1f} GFLOP/s {dtype} "
          f"(the run's precision: {precision})", flush=True)

    aug_x, aug_y = x[: max(args.train_images, args.batch_size)], y[: max(args.train_images, args.batch_size)]
    on = bench_pipeline(pipeline.train_dataset(aug_x, aug_y, cfg.augment, args.batch_size, nc, cfg.seed),
                        args.batch_size, args.aug_batches, args.repeats)
    off_cfg = OmegaConf.merge(cfg.augment, {"enabled": False})
    off = bench_pipeline(pipeline.train_dataset(aug_x, aug_y, off_cfg, args.batch_size, nc, cfg.seed),
                         args.batch_size, args.aug_batches, args.repeats)
    print(f"augment: {on['median']:,.0f} img/s on, {off['median']:,.0f} img/s off", flush=True)

    train, train_val, info = bench_train_fold(cfg, x, y, args.train_images, args.val_images)
    print(f"train_fold: {train['median']:,.0f} img/s ({info['train_rows']} rows, {info['steps_per_epoch']} steps x "
          f"{info['epochs']} epochs, val_accuracy {info['val_accuracy']:.4f})", flush=True)

    # Measured again after training: on a shared machine the first figure alone can catch a
    # moment when another process holds a core; the FLOP fraction uses the larger median.
    mm_after = bench_matmul(args.matmul_n, args.repeats, dtype=dtype)
    mm_ratio = min(mm["median"], mm_after["median"]) / max(mm["median"], mm_after["median"])
    mm = stats(mm["values"] + mm_after["values"]) | {"before": mm["median"], "after": mm_after["median"],
                                                    "ceiling": max(mm["median"], mm_after["median"])}
    fwd, per_layer = forward_flops(build_compiled(cfg, x.shape[1:], nc))
    train_flop = 3 * fwd
    fraction = stats([r * train_flop / (mm["ceiling"] * 1e9) for r in train["values"]])

    extra = diagnose(cfg, x, y, args.train_images, args.epochs) if args.diagnose else {}
    whole = whole_run(*args.whole_run) if args.whole_run else None
    baseline = whole_run(*args.whole_run, extra=("jobs=1",)) if args.whole_run and args.whole_run_baseline else None

    rows = [
        (f"matmul float32 {args.matmul_n}", mm32, "GFLOP/s", ""),
        (f"matmul {dtype} {args.matmul_n} (before+after)", mm, "GFLOP/s", ""),
        ("augment on (train_dataset)", on, "img/s", f">= {TARGET_AUG:,.0f}"),
        ("augment off (cast + one-hot)", off, "img/s", ""),
        ("train_fold, training steps", train, "img/s", f">= {TARGET_TRAIN:,.0f}"),
        ("train_fold, incl. val + checkpoint", train_val, "img/s", ""),
        *[(k, v, "img/s", "") for k, v in extra.items()],
        (f"train FLOP / {dtype} matmul", fraction, "fraction", ""),
    ]
    if whole:
        rows.append((f"whole run fold=5 epochs=10, jobs=auto ({whole['seconds']:,.0f} s)", stats([whole["images_per_s"]]),
                     "img/s", f">= {TARGET_WHOLE[dtype == 'bfloat16']:,.0f}"))
    if baseline:
        rows.append((f"whole run fold=5 epochs=10, jobs=1 ({baseline['seconds']:,.0f} s)", stats([baseline["images_per_s"]]),
                     "img/s", ""))
    print()
    print(table(rows))
    print(f"\nforward {fwd / 1e6:.2f} MFLOP/image, training ~3x = {train_flop / 1e6:.1f} MFLOP/image; "
          f"training at {train['median']:,.0f} img/s = {train['median'] * train_flop / 1e9:,.1f} GFLOP/s "
          f"of {mm['ceiling']:,.1f} GFLOP/s {dtype} matmul (before training {mm['before']:,.1f}, after {mm['after']:,.1f}); "
          f"threads {args.threads or 'all'}")
    limit = bench_machine.matmul_limit(host, args.threads or os.cpu_count() or 1, dtype)
    limit_fraction = train["median"] * train_flop / 1e9 / limit if limit else None
    if limit_fraction is not None:
        print(f"the training step at {limit_fraction:.1%} of the {dtype} matmul limit on {args.threads or 'all'} thread(s) "
              f"({limit:,.0f} GFLOP/s, measured in its own process)")
    if mm_ratio < 0.85:
        print(f"warning: matmul rate moved {1 - mm_ratio:.0%} between before and after training: "
              "the machine was busy with something else; rerun for steadier figures")
    ok_train, ok_aug = train["median"] >= TARGET_TRAIN, on["median"] >= TARGET_AUG
    print(f"targets: training {'met' if ok_train else 'MISSED'} ({train['median'] / TARGET_TRAIN:.2f}x), "
          f"augmentation {'met' if ok_aug else 'MISSED'} ({on['median'] / TARGET_AUG:.2f}x); "
          f"total {time.perf_counter() - t0:.0f} s")

    report = {
        "data": source, "images": len(x), "batch_size": args.batch_size, "repeats": args.repeats,
        "machine": {**host, "platform": platform.platform(), "gpus": len(tf.config.list_physical_devices("GPU"))},
        "precision": precision, "threads": args.threads, "matmul_float32_gflops": mm32, "matmul_gflops": mm,
        "matmul_dtype": dtype, "whole_run": whole, "whole_run_jobs_1": baseline, "augment_on_images_per_s": on, "augment_off_images_per_s": off,
        "train_images_per_s": train, "train_with_val_images_per_s": train_val, "train_fold": info,
        "diagnose": extra, "forward_flop_per_image": fwd, "train_flop_per_image": train_flop,
        "forward_flop_per_layer": dict(per_layer), "train_flop_fraction_of_matmul": fraction,
        "train_fraction_of_limit": limit_fraction, "limit_dtype": dtype,
        "targets": {"train_images_per_s": TARGET_TRAIN, "augment_images_per_s": TARGET_AUG,
                    "train_met": ok_train, "augment_met": ok_aug},
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()

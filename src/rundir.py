"""The run dir: the one module that names its files and reads its records.

Everything of a run of `python -m src.cv` goes to one dir (Hydra's `outputs/<date>/<time>/`, or
`hydra.run.dir=...`):

    run.json               written once, by the first process: the config keys that change results,
                           the data files' SHA-256, row counts, package versions. Every later process
                           (a resume, a parallel fold job) must match it or is refused.
    plan.json              with time_limit: the epochs planned and the rates measured (written once;
                           a resume trains to the same epochs)
    cv.log                 the console log (appended to by every process that works on the run)
    fold_<k>/model.keras   fold k's best epoch by val_accuracy (k = 0 .. fold-1)
    fold_<k>/history.csv   fold k's loss, accuracy, learning rate and seconds per epoch
    fold_<k>/predictions.npz  fold k's validation rows, labels, probabilities, test probabilities
    fold_<k>/done.json     fold k is complete: its scores and the SHA-256 of model.keras and
                           predictions.npz, written last. Complete only while the hashes match.
    fold_<k>/train/        while fold k trains: state.json, last-<e>.weights.h5, best-<e>.keras
    fold_<k>/.lock         held while a process trains fold k; freed by the kernel if it dies
    fold_<k>/regroup       for a moment: the run asks fold k's job to go on with more threads
    fold_<k>/epochs.json   with time_limit: the fewer epochs a fold job that started
                           late planned for itself (written once; its retries keep it)
    .ensemble.lock         held while a process builds the ensemble and report
    submission_format.json what the competition expects of a submission: its columns, the test ids,
                           the label value of each class (absent before 2026-11: ImageId,Label, 1..N, 0..K-1)
    oof.csv                out-of-fold probabilities: row, label, fold, one column p<label> per class
    test_probs.csv         test probabilities averaged over folds: the id column, p<label> per class
    submission.csv         as the competition expects (by default ImageId,Label)
    metrics.json           each fold's accuracy, their mean, the whole OOF accuracy (written last)
    report.md, *.png       learning curves, test label counts, test digits, OOF confusion, worst errors
    autoencoder.png/.json  for a model with an autoencoder: reconstructions and their MSE
    tensorboard/fold_<k>/  TensorBoard logs per fold (`tensorboard --logdir DIR/tensorboard`)
    mlflow.json            with logger=mlflow: the MLflow run that records this run
    export/<version>/      SavedModels of the fold ensemble (python -m src.export)

Every file is written to a temporary name and renamed (src.files), so a process killed at any
moment leaves either the old file or the new one, never half of one. Reading a finished run
needs neither TensorFlow nor Keras.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import platform
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.files import atomic_write, sha256, write_json

log = logging.getLogger(__name__)

RUN = "run.json"
PLAN = "plan.json"
LOG = "cv.log"  # Hydra's log of the job named cv
HYDRA = ".hydra"  # Hydra's saved configs, one folder per invocation
DONE = "done.json"
MODEL = "model.keras"
PREDICTIONS = "predictions.npz"
HISTORY = "history.csv"
TRAIN_STATE = "train"  # fold_<k>/train/: an unfinished fold's per-epoch state
STATE = "state.json"
LOCK = ".lock"
REGROUP = "regroup"  # fold_<k>/regroup: the run asks fold k's job to go on with more threads
FOLD_EPOCHS = "epochs.json"  # fold_<k>/epochs.json: the epochs a fold job planned when it started early or late
ENSEMBLE_LOCK = ".ensemble.lock"
SUBMISSION_FORMAT = "submission_format.json"
OOF = "oof.csv"
TEST_PROBS = "test_probs.csv"
SUBMISSION = "submission.csv"
METRICS = "metrics.json"
REPORT = "report.md"
CURVES = "curves_{metric}.png"
LABEL_COUNTS = "test_label_counts.png"
TEST_SAMPLES = "test_samples.png"
CONFUSION = "confusion.png"
MOST_WRONG = "most_wrong.png"
AUTOENCODER_PICTURE = "autoencoder.png"
AUTOENCODER_SCORE = "autoencoder.json"
TENSORBOARD = "tensorboard"
MLFLOW = "mlflow.json"
EXPORT = "export"
LABELS = "labels.json"  # in each export version, beside saved_model.pb: the label of each output, and the image shape

# Keys that cannot change a run's results: a resume or a fold job may differ in these.
# The data paths are compared by content instead (run.json's "data").
VOLATILE = (
    "verbose", "fold_index", "jobs", "strategy", "threads", "deterministic", "steps_per_execution", "tensorboard", "logger",
    "jit_compile", "backend", "cluster",
    "data.train", "data.train_labels", "data.test", "data.test_labels", "data.cache_dir", "data.sample",
    "pseudo.run_dir",  # the source is compared by what it gives (run.json's "pseudo")
    "data.sample_submission",  # compared by what it gives (submission_format.json)
    "data.dir", "data.kaggle",
    "data.recipe", "data.timed_recipe",  # which recipe the preset suggests: the recipe's own keys are compared
    # how a new run chooses its fold count and (recipe=auto) its recipe: what they chose is recorded in fold and the recipe's keys
    "recipe.fold_epochs", "recipe.candidates", "recipe.share", "recipe.trial_epochs", "recipe.compared",
)
# Keys added to the config after run dirs were written, with the value that does what the code did
# before them: a run dir recorded without the key matches a config that holds it at this value.
LATER_KEYS = {
    "time_limit": None,
    "label_smoothing": 0.0,
    "augment.elastic": 0.0,
    "augment.elastic_sigma": 4.0,
    "pseudo.threshold": 0.99,
    "augment.flip": False,
    "data.flip": False,
    "augment.crop": 0,
    "augment.erasing": 0.0,
    "augment.ramp": 0.0,
    "recipe.name": None,
    "recipe.why": "recorded before recipes were named",
}
PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "hydra-core", "joblib")


@dataclass
class FoldResult:
    """What a finished fold leaves for the ensemble (fold_<k>/done.json and predictions.npz)."""

    fold: int  # 0-based
    val_index: np.ndarray
    val_labels: np.ndarray
    val_probs: np.ndarray
    test_probs: np.ndarray
    accuracy: float
    best_epoch: int  # 1-based
    seconds: float
    val_probs_plain: np.ndarray | None = None  # without test-time augmentation, when tta > 0
    precision: str | None = None  # the Keras dtype policy it trained under (not recorded before 2026-11)


@dataclass(frozen=True)
class SubmissionFormat:
    """What a competition expects of a submission: its two columns, the test images' ids in the
    test file's order (None: 1..N), the order of the submission's rows as positions in the test file
    (None: the file's order), and the label value of each class index (None: the index itself, as
    in Digit Recognizer)."""

    columns: tuple[str, str] = ("ImageId", "Label")
    ids: tuple | None = None
    classes: tuple | None = None
    order: tuple | None = None

    def rows(self, n: int) -> np.ndarray:
        """The test-file positions of the submission's rows."""
        return np.asarray(self.order, np.int64) if self.order is not None else np.arange(n)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """The competition's labels for class indices."""
        return np.asarray(self.classes, dtype=object)[indices] if self.classes is not None else np.asarray(indices, np.int64)

    def id_values(self, n: int) -> np.ndarray:
        return np.asarray(self.ids) if self.ids is not None else np.arange(1, n + 1)

    def prob_columns(self, num_classes: int) -> list[str]:
        """The probability columns of oof.csv and test_probs.csv: p<label> per class."""
        return [f"p{c}" for c in (self.classes if self.classes is not None else range(num_classes))]

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "ids": _plain(self.ids), "classes": _plain(self.classes),
                "order": _plain(self.order)}


def _plain(values) -> list | None:
    """numpy scalars as JSON numbers and strings."""
    if values is None:
        return None
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def write_submission_format(run_dir: Path, fmt: SubmissionFormat) -> None:
    """Record the run's submission format once; UserError when the run dir recorded another
    (another sample submission, or test ids, than the run was started with)."""
    write_once(Path(run_dir) / SUBMISSION_FORMAT, fmt.to_dict())
    recorded = read_submission_format(run_dir)
    if recorded != fmt:
        raise UserError(f"{run_dir} writes its submission as {list(recorded.columns)} with other ids or classes than "
                        f"the data given now ({list(fmt.columns)}): resume it with its own data.test and sample submission, "
                        "or choose another hydra.run.dir")


def read_submission_format(run_dir: Path) -> SubmissionFormat:
    """The run's submission format; Digit Recognizer's for run dirs written before it was recorded."""
    path = Path(run_dir) / SUBMISSION_FORMAT
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return SubmissionFormat()
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({e}): restore it from a copy of the run dir") from None
    def tupled(key):
        return tuple(record[key]) if record.get(key) is not None else None

    return SubmissionFormat(tuple(record["columns"]), tupled("ids"), tupled("classes"), tupled("order"))


def probabilities(frame, leading: int) -> np.ndarray:
    """The probability columns of an oof.csv (leading=3: row, label, fold) or test_probs.csv
    (leading=1: the id column) as an array, whatever the classes are called."""
    return frame.iloc[:, leading:].to_numpy(np.float64)


def holds_nothing(run_dir: Path, log: str = LOG) -> bool:
    """Whether `run_dir` holds nothing of a run: no dir, or only Hydra's config and the command's
    log (`log`: cv.log for src.cv)."""
    return not Path(run_dir).exists() or {p.name for p in Path(run_dir).iterdir()} <= {HYDRA, log}


def read_record(run_dir: Path) -> dict:
    """The run's run.json; UserError when `run_dir` holds none that can be read."""
    path = Path(run_dir) / RUN
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        reason = str(e)
    else:
        if isinstance(record, dict) and {"resolved_config", "rows"} <= record.keys():
            refuse_interpolations(record["resolved_config"], f"{path}: resolved_config.")
            return record
        reason = "it has no resolved_config and rows"
    raise UserError(f"{run_dir} is not a run dir of src.cv (no readable {RUN}: {reason}): "
                    "give the hydra.run.dir of a src.cv run, or choose an empty dir for a new one")


def refuse_interpolations(tree, where: str) -> None:
    """Refuse (UserError, naming the key) a recorded value holding an OmegaConf interpolation.

    Recorded configs are written resolved, so a `${` in one was put there by hand: resolving it
    could read files or the environment the run dir's author chose. A recorded value is data."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            refuse_interpolations(value, f"{where}{key}.")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            refuse_interpolations(value, f"{where}{i}.")
    elif isinstance(tree, str) and "${" in tree:
        shown = tree if len(tree) <= 40 else tree[:37] + "..."
        raise UserError(f"{where[:-1]} holds an interpolation ({shown!r}), which no run writes: refused, nothing was read. "
                        "A recorded value is data; only open run dirs you trust")


def finished_config(run_dir: Path) -> dict:
    """The recorded config of a finished run of src.cv (every fold complete); UserError otherwise."""
    config = read_record(run_dir)["resolved_config"]
    folds = int(config["fold"])
    missing = [k for k in range(folds) if load_complete(run_dir, k) is None]
    if missing:
        raise UserError(f"{run_dir}: fold(s) {missing} of {folds} are not complete: finish the run first "
                        f"(python -m src.cv hydra.run.dir={run_dir} with its settings)")
    return config


def read_metrics(run_dir: Path) -> dict | None:
    """The run's metrics.json (written last by an ensemble), or None when there is none."""
    try:
        return json.loads((Path(run_dir) / METRICS).read_text())
    except (OSError, ValueError):
        return None


def fold_dir(run_dir: Path, k: int) -> Path:
    """Where fold k (0-based) keeps its checkpoint, history, predictions and training state."""
    return Path(run_dir) / f"fold_{k}"


def tensorboard_dir(run_dir: Path, k: int) -> Path:
    """Fold k's TensorBoard log dir."""
    return Path(run_dir) / TENSORBOARD / f"fold_{k}"


def exports(run_dir: Path) -> dict[int, Path]:
    """The run's SavedModel exports by version (each written whole, then renamed into place)."""
    root = Path(run_dir) / EXPORT
    found = {int(p.name): p for p in root.glob("*") if p.name.isdigit() and (p / "saved_model.pb").exists()}
    return dict(sorted(found.items()))


def identity(cfg: DictConfig, digests: dict[str, str], pseudo: dict | None = None, resolved: dict | None = None) -> dict:
    """The run's identity: every config key that changes results (with what the data resolved,
    `resolved`: {"data.image_shape": ..., "data.num_classes": ...}), the data it was trained on,
    and the pseudo-labels' source when it has one."""
    flat = {**flatten(OmegaConf.to_container(cfg, resolve=True)), **(resolved or {})}
    keys = {k: v for k, v in flat.items() if not is_volatile(k)}
    return {"config": keys, "data": dict(digests), **({"pseudo": pseudo} if pseudo else {})}


def is_volatile(key: str) -> bool:
    """Whether the dotted config `key` cannot change a run's results (VOLATILE)."""
    return any(key == p or key.startswith(p + ".") for p in VOLATILE)


def claim(run_dir: Path, ident: dict, cfg: DictConfig, rows: dict[str, int], resolved: dict | None = None,
          runtime: dict | None = None, files: dict | None = None) -> None:
    """Record the run's identity in `run_dir`, or check it against the one recorded there.

    Refuses (UserError) a run dir that belongs to other data, or whose recorded config differs in
    a key that changes results, naming the keys. Safe when several fold jobs start at once. The
    record holds the config with what the data resolved (`resolved`, dotted keys) and the
    runtime it started on (src.runtime's record), and `files`: the SHA-256 of data files that are
    not part of its identity (the test labels), so that later commands read them only unchanged.
    """
    path = run_dir / RUN
    config = OmegaConf.to_container(cfg, resolve=True)
    for key, value in (resolved or {}).items():
        put(config, key, value)
    record = {
        **ident,
        "rows": rows,
        "resolved_config": config,
        "versions": package_versions(),
        **({"runtime": runtime} if runtime else {}),
        **({"files": files} if files else {}),
    }
    if write_once(path, record):
        log.info("new run in %s", run_dir)
    recorded = read_record(run_dir)
    if recorded.get("data") != ident["data"]:
        raise UserError(
            f"{run_dir} belongs to a run on different data (train/test file contents differ from "
            f"{path}'s SHA-256): point data.train/data.test at that run's files, or choose another hydra.run.dir"
        )
    if recorded.get("pseudo") != ident.get("pseudo"):
        raise UserError(
            f"{run_dir} was trained with other pseudo-labels (recorded {recorded.get('pseudo')}, now "
            f"{ident.get('pseudo')}): resume it with its own pseudo.run_dir and pseudo.threshold, or choose another hydra.run.dir"
        )
    old, new = upgrade(recorded.get("config", {}), new_keys=ident["config"].keys()), ident["config"]
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k, '<unset>')!r} → {new.get(k, '<unset>')!r}" for k in changed[:8])
        raise UserError(
            f"{run_dir} holds a run with a different config ({detail}{', …' if len(changed) > 8 else ''}): "
            "resume it with its own settings, or choose another hydra.run.dir for the new ones"
        )
    if recorded.get("versions") != record["versions"]:
        log.warning("package versions differ from the ones %s was started with (%s)", run_dir, path)


def upgrade(flat: dict, new_keys=()) -> dict:
    """A recorded config (dotted keys) in today's keys, with what the code did when it was
    recorded: `schedule.kind: K` (before 2026-12) is `schedule._target_: src.training.schedules.K`,
    and each of `new_keys` added since takes its LATER_KEYS value."""
    flat = dict(flat)
    if "schedule._target_" not in flat:
        flat["schedule._target_"] = f"src.training.schedules.{flat.pop('schedule.kind', 'exponential')}"
        flat["schedule._partial_"] = True
    return {**{k: v for k, v in LATER_KEYS.items() if k in new_keys}, **flat}


def put(tree: dict, dotted: str, value) -> None:
    """Set the dotted key in a nested config tree to a copy of `value`, making the nodes above it."""
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}
        tree = tree[key]
    tree[last] = copy.deepcopy(value)


def recorded_runtime(run_dir: Path) -> dict:
    """The runtime a run dir was started on (run.json's "runtime"); for one started before it was
    recorded (2026-12), the precision its complete folds trained in, if any; {} for a new run."""
    try:
        record = json.loads((Path(run_dir) / RUN).read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(record, dict) and isinstance(record.get("runtime"), dict):
        return record["runtime"]
    folds = int(record.get("resolved_config", {}).get("fold", 0)) if isinstance(record, dict) else 0
    for k in range(folds):
        try:
            precision = json.loads((fold_dir(run_dir, k) / DONE).read_text()).get("precision")
        except (OSError, ValueError, AttributeError):
            continue
        if precision:
            return {"precision": precision}
    return {}


def write_once(path: Path, record: dict) -> bool:
    """Write `record` as JSON to `path` unless it exists; True if this call wrote it. Safe when
    several processes try at once: exactly one wins, and the others read the winner's."""
    if path.exists():
        return False
    tmp = atomic_write(path.parent / f".{path.name}.{os.getpid()}", lambda t: t.write_text(json.dumps(record, indent=2) + "\n"))
    try:
        os.link(tmp, path)  # fails if another process got there first
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def recipe_why(cfg) -> str:
    """Why a run's recipe (a config or run.json's resolved config) trains it: its own `why`, and
    where its preset chose it for the time_limit (data.timed_recipe) rather than as its recipe."""
    named = cfg.get("recipe") or {"name": None, "why": LATER_KEYS["recipe.why"]}
    data = cfg.get("data") or {}
    timed = cfg.get("time_limit") and named["name"] and data.get("timed_recipe") == named["name"] != data.get("recipe")
    return f"{named['why']} (the preset's recipe under a time_limit: data.timed_recipe)" if timed else named["why"]


def fold_counts_text(epochs: dict) -> str:
    """plan.json's fold_choice epochs, `{3: 9, 4: 5, 5: 0, 6: 0}`, as "3: 9, 4: 5, 5 and more: none"."""
    fit = [f"{k}: {e}" for k, e in epochs.items() if e]
    none = [int(k) for k, e in epochs.items() if not e]
    return ", ".join(fit + ([f"{min(none)} and more: none"] if none else []))


def read_plan(run_dir: Path) -> dict | None:
    """The run's time_limit plan (plan.json), or None when it has none."""
    try:
        return json.loads((Path(run_dir) / PLAN).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{Path(run_dir) / PLAN} cannot be read ({e}): delete it to plan again") from None


def fold_epochs(fold_dir: Path, planned: int) -> int:
    """The epochs a fold trains to: its own, where its job started early or late and planned
    them (epochs.json), else the run's `planned`."""
    try:
        return int(json.loads((Path(fold_dir) / FOLD_EPOCHS).read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return planned


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages that decide a run's numbers."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_writable(run_dir: Path, need_bytes: int) -> None:
    """Fail before training when the run dir cannot be written or the disk cannot hold the run."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / ".write-test", lambda t: t.write_bytes(b"ok")).unlink()
    except OSError as e:
        raise UserError(f"cannot write to the run dir {run_dir} ({e.strerror or e}): choose a writable hydra.run.dir") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise UserError(
            f"only {free / 2**20:,.0f} MiB free on the disk of {run_dir}, and this run needs about "
            f"{need_bytes / 2**20:,.0f} MiB: free some space or choose another hydra.run.dir"
        )


def mark_complete(fdir: Path, summary: dict) -> None:
    """Write fold_dir/done.json (last): the fold's scores and the hashes of its results."""
    hashes = {name: sha256(fdir / name) for name in (MODEL, PREDICTIONS)}
    write_json(fdir / DONE, {**summary, "sha256": hashes})


def load_complete(run_dir: Path, k: int) -> FoldResult | None:
    """Fold k's result when it is complete, or None if it must be (re)trained.

    A fold whose files do not match the hashes in done.json (a truncated or edited checkpoint)
    is reported with a warning and its done.json removed, so it is retrained.
    """
    fdir = fold_dir(run_dir, k)
    done_path = fdir / DONE
    if not done_path.exists():
        return None
    try:
        done = json.loads(done_path.read_text())
        bad = [name for name, digest in done["sha256"].items() if not (fdir / name).is_file() or sha256(fdir / name) != digest]
    except (OSError, ValueError, KeyError, TypeError) as e:
        bad = [f"{DONE} ({e})"]
    if not bad:
        with np.load(fdir / PREDICTIONS, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        return FoldResult(k, arrays["val_index"], arrays["val_labels"], arrays["val_probs"], arrays["test_probs"],
                          float(done["accuracy"]), int(done["best_epoch"]), float(done["seconds"]),
                          arrays.get("val_probs_plain"), done.get("precision"))
    log.warning("fold %s is damaged (%s missing or not what was written): training it again", fdir.name, ", ".join(bad))
    done_path.unlink(missing_ok=True)
    return None


@contextmanager
def fold_lock(fdir: Path) -> Iterator[bool]:
    """Hold fold_dir/.lock while training it; yields False if another live process holds it."""
    with _lock(fdir / LOCK, wait=False) as mine:
        yield mine


@contextmanager
def ensemble_lock(run_dir: Path) -> Iterator[None]:
    """Hold run_dir/.ensemble.lock (waiting for it) while building the ensemble and report."""
    with _lock(Path(run_dir) / ENSEMBLE_LOCK, wait=True):
        yield


@contextmanager
def _lock(path: Path, wait: bool) -> Iterator[bool]:
    """An OS file lock on `path` (filelock: flock on Unix, LockFileEx on Windows), freed by the
    operating system when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        if not wait:  # who trains the fold, for a curious user; the ensemble's lock file is never rewritten
            with contextlib.suppress(OSError):  # Windows refuses writes to a locked file: the pid is a courtesy
                path.write_text(f"{os.getpid()}\n")
        yield True
    finally:
        lock.release()


def flatten(tree, prefix: str = "") -> dict:
    """A nested config as one level of dotted keys: {"model.dropout": 0.4, ...}."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}

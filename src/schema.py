"""The commands' config schemas: dataclasses in Hydra's ConfigStore that conf/*.yaml extend.

Each YAML file names its schema first in its defaults list (`- cv_schema`, `- /schema/model_conv@_here_`), so
Hydra refuses a value of the wrong type (`fold=abc`) and a key the schema lacks
(`model.dropuot=0.3`) while it composes. The dataclasses give the keys and their types only (a
field without a default is `???` until the YAML file sets it); the values, and the comments that
explain them, stay in the YAML files. A field that takes a number or a list (`fold_index: 3` or
`[0,2]`) is `Any`: OmegaConf has no unions with containers.

Hydra still lets `+key=value` add a key to a structured config: src.cli.command calls `check_keys`
before every command, which refuses a key that no schema names. Importing this module registers
the schemas (src.cli imports it, so every command does).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, ValidationError

from src.errors import UserError


@dataclass
class Kaggle:
    competition: Optional[str]
    dataset: Optional[str]


@dataclass
class Data:
    """conf/data/*.yaml: the competition's files and what they hold."""

    kaggle: Kaggle
    dir: str
    format: str
    train: str
    test: str
    sample_submission: Optional[str]
    test_labels: Optional[str]
    image_shape: Optional[List[int]]
    num_classes: Optional[int]
    flip: bool
    batch_size: int
    cache_dir: Optional[str]
    recipe: str
    timed_recipe: Optional[str] = field(default=None, kw_only=True)  # with a time_limit (null: recipe); a schema node after a preset resets it


@dataclass
class SampleData(Data):
    """data=sample: the embedded sample, written on first use."""

    sample: bool


@dataclass
class IdxData(Data):
    """data=idx: the original MNIST files, the labels in files of their own."""

    train_labels: Optional[str]


@dataclass
class Model:
    """conf/model/*.yaml: a builder of src/models/builders.py, finished per fold (`_partial_`)."""

    _target_: str
    _partial_: bool


@dataclass
class ConvModel(Model):
    """model=kfold_cnn and model=convbn."""

    dropout: float
    bn_momentum: float


@dataclass
class SimpleCnn(Model):
    dropout: float


@dataclass
class Mlp(Model):
    width: int
    depth: int


@dataclass
class ResNet(Model):
    """model=resnet: stages of pre-activation residual blocks."""

    width: int
    blocks: List[int]
    dropout: float
    bn_momentum: float


@dataclass
class AutoencoderClassifier(Model):
    encoder: List[int]
    classifier: List[int]


@dataclass
class Affine:
    """augment=none: the random affine's ranges."""

    enabled: bool
    rotation: float
    zoom: float
    width_shift: float
    height_shift: float


@dataclass
class Augment(Affine):
    """augment=default: the affine, elastic distortion, mirroring, padded crop and random erasing."""

    elastic: float
    elastic_sigma: float
    flip: bool
    crop: int = 0
    erasing: float = 0.0
    ramp: float = 0.0


@dataclass
class KerasOptimizerArgs:
    """Arguments of keras.optimizers classes that a config may add to an optimizer (a recipe, or
    `optimizer.use_ema=true` on the command line): those of every Keras optimizer, then those of
    Adam, AdamW, Nadam, Adamax, Lion, SGD, RMSprop, Adadelta and Adagrad."""

    weight_decay: Optional[float]
    clipnorm: Optional[float]
    clipvalue: Optional[float]
    global_clipnorm: Optional[float]
    use_ema: Optional[bool]
    ema_momentum: Optional[float]
    ema_overwrite_frequency: Optional[int]
    gradient_accumulation_steps: Optional[int]
    beta_1: Optional[float]
    beta_2: Optional[float]
    epsilon: Optional[float]
    amsgrad: Optional[bool]
    momentum: Optional[float]
    nesterov: Optional[bool]
    rho: Optional[float]
    centered: Optional[bool]
    initial_accumulator_value: Optional[float]


@dataclass
class Optimizer:
    """conf/optimizer/*.yaml: a keras.optimizers class by `_target_`, finished per fold with the
    schedule's learning rate; open to the arguments in `extra`."""

    extra: ClassVar[type] = KerasOptimizerArgs
    _target_: str
    _partial_: bool
    learning_rate: float


@dataclass
class Schedule:
    """conf/schedule/*.yaml: a function of src.training.schedules (or a user's) by `_target_`,
    finished per fold with the peak rate, the epochs and the steps per epoch (`_partial_`)."""

    _target_: str
    _partial_: bool


@dataclass
class Exponential(Schedule):
    """schedule=exponential and schedule=constant."""

    decay: float


@dataclass
class Cosine(Schedule):
    warmup: float
    start: float
    final: float


@dataclass
class Strategy:
    name: str
    devices: Optional[List[str]]
    tpu: Optional[str]


@dataclass
class Cluster:
    """cluster=local|ray|slurm: where fold jobs run (src.cluster, docs/cluster.md)."""

    engine: str
    retries: int  # a failed fold job is started again this many times, from its last committed epoch
    cpus_per_job: int = 1  # ray and slurm: each fold job's CPUs (its TensorFlow threads)
    gpus_per_job: int = 0
    wait: bool = True  # slurm: false submits the jobs and returns
    heartbeat_s: float = 10.0  # ray and slurm: how often the main process beats the run dir's heartbeat
    stale_s: float = 120.0  # a watched fold job stops when the heartbeat has not changed for this long
    shared_wait_s: float = 30.0  # how long a fold job waits to read the run dir's token before it says the dir is not shared
    poll_s: float = 5.0  # slurm: how often squeue is asked
    address: Optional[str] = None  # ray: HOST:PORT of the cluster (default RAY_ADDRESS)
    partition: Optional[str] = None  # slurm: sbatch --partition
    time: Optional[str] = None  # slurm: sbatch --time (e.g. 2:00:00)
    mem: Optional[str] = None  # slurm: sbatch --mem (e.g. 16G)
    sbatch_args: List[str] = field(default_factory=list)  # slurm: more sbatch options, e.g. [--account=abc]


@dataclass
class Logger:
    """logger=mlflow."""

    name: str
    tracking_uri: str
    experiment_name: str


@dataclass
class Pseudo:
    run_dir: Optional[str]
    threshold: float


@dataclass
class Recipe:
    """Which recipe (conf/recipe/) composed the run's model and training, and why: the report says it."""

    name: Optional[str]
    why: str
    # with time_limit and no fold=: the epochs each fold gets before the budget buys more folds
    fold_epochs: int = 12
    # recipe=auto: the recipes it compares, the share of the time_limit it spends, the epochs of each trial
    candidates: Optional[List[str]] = None
    share: float = 0.1
    trial_epochs: int = 2
    compared: Optional[Dict[str, float]] = None  # recipe=auto's trial accuracy per candidate, as recorded


@dataclass
class CvExtra:
    """Top-level keys that only a choice adds: the schema cannot hold them without adding them."""

    logger: Optional[Logger]


def override_key(override: str) -> str:
    """The dotted key (or group) a command-line override names: `+model.width=8` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def about(text: str) -> Any:
    """A required field with its one-line description (what `python -m src.cv --help` prints)."""
    return field(metadata={"help": text})


@dataclass
class Cv:
    """conf/config.yaml: `python -m src.cv`."""

    extra: ClassVar[type] = CvExtra
    data: Data = about("the competition's files and what they hold: a preset (--help data)")
    model: Any = about("the network, by `_target_` (--help model)")  # a user's own family names its builder's arguments
    augment: Affine = about("random affine, elastic, flip, crop and erasing ranges (--help augment)")
    optimizer: Optimizer = about("a keras.optimizers class by `_target_` and its arguments (--help optimizer)")
    schedule: Any = about("the learning-rate schedule by `_target_` (--help schedule)")
    callbacks: Dict[str, Any] = about("optional Keras callbacks by `_target_`, e.g. callbacks=swa (--help callbacks)")
    recipe: Recipe = about("the competition's recipe: its preset's, or generic for files given by path (--help recipe)")
    strategy: Strategy = about("where the folds train: auto, default, mirrored, multi_worker, tpu (--help strategy)")
    cluster: Cluster = about("where fold jobs run: local, ray or slurm (--help cluster)")
    fold: int = about("number of folds; 1 = one holdout split of val_fraction")
    split: str = about("kfold or stratified")
    val_fraction: float = about("holdout size when fold=1")
    epochs: int = about("epochs per fold; with time_limit, given on the command line, it caps the plan")
    time_limit: Any = about("e.g. 20m, 1h30m: plan the epochs so the whole run ends within it")
    batch_size: int = about("global batch, split evenly over the replicas (the data preset suggests one)")
    seed: int = about("folds, weight initialisation, shuffling and augmentation")
    tta: int = about("test-time augmentation: average the plain image and this many augmented views")
    loss: str = about("any Keras loss name, on one-hot targets")
    pseudo: Pseudo = about("second stage: pseudo.run_dir=DIR adds DIR's confident test predictions to the training rows")
    label_smoothing: float = about("with categorical_crossentropy: train on (1 - s) one-hot + s / classes")
    fold_index: Any = about("train only these folds (3 or [0,2]) into the run dir; null = all")
    backend: str = about("Keras backend: auto, tensorflow or jax (docs/hardware.md)")
    precision: str = about("auto (bf16 where the hardware has it, float16 on T4/V100, else float32) or a dtype policy")
    jit_compile: Any = about("XLA: auto (Keras's choice on one GPU, off on CPUs), true or false")
    verbose: bool = about("a live progress line per epoch")
    steps_per_execution: int = about("training steps per call into the backend")
    deterministic: bool = about("true: the same predictions bit for bit on the CPU (one thread per process)")
    tensorboard: bool = about("TensorBoard logs per fold in the run dir")
    jobs: Any = about("folds trained at once, each in its own process: auto = one per core on a CPU-only machine")
    threads: Any = about("CPU threads per process: auto = all, or an equal share per fold job")


@dataclass
class RunDir:
    """ensemble.yaml and report.yaml: a finished run to work on."""

    run_dir: str = about("a finished run of src.cv (its hydra.run.dir)")


@dataclass
class RunData:
    """report, ensemble and predict: the run's data files given by path (null: the paths run.json
    records, read only when their SHA-256 is the recorded one), and this command's parse cache."""

    train: Optional[str] = None
    train_labels: Optional[str] = None
    test: Optional[str] = None
    test_labels: Optional[str] = None
    cache_dir: Optional[str] = "data/.cache"


def run_data() -> Any:
    """The `data` node of a command on a finished run, with its description."""
    return field(default_factory=RunData, metadata={
        "help": "data.cache_dir: where a parse is cached (null: not at all); data.train=/data.test= when the recorded files moved"})


@dataclass
class RunDirData(RunDir):
    data: RunData = run_data()


@dataclass
class Export(RunDir):
    version: Optional[int] = about("the export's version folder under DIR/export/; null = the next one")


@dataclass
class Serve(RunDir):
    host: str = about("address to listen on: 0.0.0.0 to be reached from other machines (trusted networks only)")
    port: int = about("TCP port")
    export: bool = about("false: the fold .keras files in safe mode; true: a SavedModel export (code: only your own)")
    version: Optional[int] = about("with export=true, which export to serve; null = the newest")
    max_batch: int = about("requests waiting together go through the model in one call of at most this many rows")
    max_body: int = about("bytes; a larger request body is answered 413")
    access_log: bool = about("one log line per request")
    allowed_hosts: Optional[List[str]] = about("Host header names answered; null: this machine's names")
    header_timeout: float = about("seconds for a request's line and headers; a slower connection is closed")
    body_timeout: float = about("seconds for its body, once the headers are in")
    docs: bool = about("serve /openapi.json")


@dataclass
class Predict(RunDir):
    input: str = about("a CSV in the competition's test format")
    output: str = about("where the predictions go (a CSV in the submission's format)")
    probabilities: bool = about("add a probability column per class")
    overwrite: bool = about("replace an existing output")
    data: RunData = run_data()


@dataclass
class Submit(RunDir):
    message: str = about("the submission's description on Kaggle")


@dataclass
class Blend:
    runs: List[str] = about("finished runs of the same data: [DIR1,DIR2,...]")
    weights: str = about("equal, or oof: simplex weights fitted on the runs' out-of-fold predictions")


@dataclass
class Download:
    data: Data = about("the preset whose files to fetch: data=kannada_mnist")
    out: str = about("the folder the files go to")
    max_bytes: int = about("stop when unpacking would write more than this")
    max_files: int = about("stop at an archive of more members than this")


def _open(schema: type) -> DictConfig:
    """`schema` as a node that a config may add keys to (check_keys checks them against `extra`)."""
    node = OmegaConf.structured(schema)
    OmegaConf.set_struct(node, False)
    return node


def register() -> None:
    """Store the schemas under the names conf/*.yaml use: `<command>_schema` for a command's
    config, `schema/<group>_<name>` for a group's options (`- /schema/model_conv@_here_`)."""
    cs = ConfigStore.instance()
    commands = {"cv": Cv, "ensemble": RunDirData, "report": RunDirData, "export": Export, "serve": Serve, "predict": Predict,
                "submit": Submit, "blend": Blend, "download": Download}
    for command, node in commands.items():
        cs.store(name=f"{command}_schema", node=node)
    groups = {
        "data": {"data": Data, "sample": SampleData, "idx": IdxData},
        "model": {"model": Model, "conv": ConvModel, "simple_cnn": SimpleCnn, "mlp": Mlp, "resnet": ResNet,
                  "autoencoder_classifier": AutoencoderClassifier},
        "augment": {"affine": Affine, "augment": Augment},
        "optimizer": {"optimizer": _open(Optimizer)},
        "schedule": {"exponential": Exponential, "cosine": Cosine},
        "strategy": {"strategy": Strategy},
        "cluster": {"cluster": Cluster},
        "logger": {"logger": Logger},
    }
    for group, options in groups.items():  # in a group of their own, so that no group lists them as options
        for name, node in options.items():
            cs.store(group="schema", name=group if name == group else f"{group}_{name}", node=node)


def check_keys(cfg: DictConfig, path: str = "") -> None:
    """Refuse (UserError) a key that the schema of its node does not name, with the nearest one.

    Hydra refuses `epoch=3` under a schema but adds `+epoch=3`; this refuses that too, and checks
    the type of a key added to a node open to more (the optimizer) against the node's `extra`.
    A node without a schema is not checked; the nodes in it are.
    """
    schema = OmegaConf.get_type(cfg)
    typed = schema not in (None, dict)
    own = [f.name for f in fields(schema)] if typed else []
    extra = getattr(schema, "extra", None)
    known = own + ([f.name for f in fields(extra)] if extra else [])
    for key in cfg.keys():
        if typed and key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            raise UserError(f"unknown config key '{path}{key}'" + (f": did you mean '{path}{near[0]}'?" if near else ""))
        if not OmegaConf.is_missing(cfg, key) and not OmegaConf.is_interpolation(cfg, key) and isinstance(cfg[key], DictConfig):
            check_keys(cfg[key], f"{path}{key}.")
    added = [key for key in cfg.keys() if typed and key not in own]
    if added:
        try:
            OmegaConf.merge(OmegaConf.structured(extra), OmegaConf.masked_copy(cfg, added))
        except ValidationError as e:
            raise UserError(f"{path}{e.full_key}: {str(e).splitlines()[0]}") from None


register()

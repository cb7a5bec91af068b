"""What a K-fold run checks and reads before Keras loads (src.cv, before it chooses the backend):
the request on the command line, the data files, the sample submission, the pseudo-labels and
the folds. A bad command or file is refused in ~3 s, not after TensorFlow's import (~11 s
on a 2-core Zen 3)."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig

from src import rundir
from src.errors import UserError
from src.inputs import dataset as data_mod
from src.inputs import pseudo as pseudo_labels
from src.inputs.folds import FoldData, fold_data, make_folds
from src.inputs.submission import submission_format
from src.results import tracking
from src.runtime import policy
from src.training import budget


@dataclass(frozen=True)
class Inputs:
    """The checked data, what a submission must look like, the pseudo-labels, the folds, and what
    the data resolved (recorded in run.json; the composed config is never written to)."""

    dataset: data_mod.Dataset
    fmt: rundir.SubmissionFormat
    pseudo: pseudo_labels.PseudoLabels | None
    folds: list
    resolved: dict  # {"data.image_shape": [...], "data.num_classes": K}

    def fold(self, k: int) -> FoldData:
        return fold_data(self.dataset, self.folds, k, self.pseudo)


@dataclass(frozen=True)
class Request:
    """A checked request: its time limit in seconds (None: none) and its inputs."""

    limit: float | None
    inputs: Inputs


def prepare(cfg: DictConfig) -> Request:
    """Check the request, then read and split the data; UserError on the first thing wrong."""
    limit = check_request(cfg)
    inputs = load_inputs(cfg)
    select_folds(cfg.fold_index, len(inputs.folds))
    return Request(limit, inputs)


def check_request(cfg: DictConfig) -> float | None:
    """What can be refused before any data is read; the time limit in seconds, if any."""
    if cfg.epochs < 1:
        raise UserError(f"epochs={cfg.epochs}: need at least 1")
    policy.check_counts(cfg.get("jobs"), cfg.get("threads"))
    limit = budget.parse_duration(cfg.get("time_limit"))
    if cfg.recipe.name == "auto" and not limit:
        raise UserError("recipe=auto compares recipes within a share of a time_limit: add time_limit= (e.g. time_limit=20m), "
                        "or name a recipe (recipe=seed or recipe=generic)")
    tracking.wanted(cfg)  # logger=mlflow without MLflow is refused before any training
    return limit


def load_inputs(cfg: DictConfig) -> Inputs:
    """Read and check the data files, the sample submission and the pseudo-labels, and split."""
    dataset = data_mod.load(cfg.data)
    pseudo = pseudo_labels.load(cfg.get("pseudo"), dataset.x_test, dataset.digests["test"], dataset.num_classes)
    folds = make_folds(dataset.y_train, cfg.fold, cfg.split, cfg.seed, cfg.val_fraction)
    smallest = min(len(tr) for tr, _ in folds)
    if smallest < cfg.batch_size:
        raise UserError(f"a fold trains on only {smallest} rows, less than batch_size={cfg.batch_size}: lower batch_size or fold")
    resolved = {"data.image_shape": list(dataset.x_train.shape[1:]), "data.num_classes": dataset.num_classes}
    return Inputs(dataset, submission_format(cfg.data, dataset), pseudo, folds, resolved)


def select_folds(fold_index, folds: int) -> list[int]:
    """The 0-based folds to train: all when `fold_index` is null, else the one or the list given."""
    if fold_index is None:
        return list(range(folds))
    chosen = list(fold_index) if isinstance(fold_index, (list, tuple, ListConfig)) else [fold_index]
    bad = [k for k in chosen if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < folds]
    if bad or not chosen:
        raise UserError(f"fold_index={fold_index!r}: need fold numbers in 0..{folds - 1} (fold={folds}), e.g. fold_index=0 or fold_index=[0,2]")
    return sorted(set(chosen))

"""K-fold CV runner: `python -m src.cv fold=15 epochs=45` → submission.csv.

Everything of a run goes to Hydra's run dir (`outputs/<date>/<time>/`, or `hydra.run.dir=...`):

    .hydra/config.yaml     the resolved config (overrides.yaml: what was typed)
    cv.log                 the console log
    fold_<k>/model.keras   fold k's best epoch by val_accuracy
    fold_<k>/history.csv   fold k's loss, accuracy and learning rate per epoch
    fold_<k>/predictions.npz  fold k's validation rows, their probabilities, test probabilities
    oof.csv                out-of-fold probabilities: row, label, fold, p0..p9
    test_probs.csv         test probabilities averaged over folds: ImageId, p0..p9
    submission.csv         ImageId,Label for Kaggle
    metrics.json           each fold's accuracy, their mean, the whole OOF accuracy (written last)

The task function returns the mean CV accuracy, so a Hydra sweeper can maximise it.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src import data as data_mod
from src import ensemble
from src.errors import UserError
from src.split import make_folds
from src.strategy import check_batch, make_strategy, resolve_precision
from src.train import RunClock, train_fold

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path) -> ensemble.Ensemble:
    """Load and check the data, train every fold, write the ensemble; return it."""
    if (run_dir / ensemble.METRICS).exists():
        raise UserError(
            f"{run_dir} already holds a finished run ({ensemble.METRICS}); "
            "choose another hydra.run.dir or move that run away"
        )
    if cfg.epochs < 1:
        raise UserError(f"epochs={cfg.epochs}: need at least 1")
    dataset = data_mod.load(cfg.data)
    folds = make_folds(dataset.y_train, cfg.fold, cfg.split, cfg.seed, cfg.val_fraction)
    strategy = make_strategy(cfg.strategy)
    per_replica = check_batch(cfg.batch_size, strategy)
    precision = resolve_precision(cfg.precision, strategy)
    smallest = min(len(tr) for tr, _ in folds)
    if smallest < cfg.batch_size:
        raise UserError(f"a fold trains on only {smallest} rows, less than batch_size={cfg.batch_size}: lower batch_size or fold")
    log.info(
        "%d fold(s) × %d epoch(s), batch %d (%d per replica × %d replica(s), %s), %s",
        len(folds), cfg.epochs, cfg.batch_size, per_replica, strategy.num_replicas_in_sync,
        type(strategy).__name__, precision,
    )
    clock = RunClock(len(folds), cfg.epochs)
    results = []
    for k, (tr, va) in enumerate(folds, start=1):
        arrays = (dataset.x_train[tr], dataset.y_train[tr], dataset.x_train[va], dataset.y_train[va], dataset.x_test)
        result = train_fold(k, arrays, va, cfg, strategy, run_dir / f"fold_{k}", clock, dataset.num_classes, precision)
        log.info("fold %d/%d accuracy %.4f (best epoch %d, %.0f s)", k, len(folds), result.accuracy, result.best_epoch, result.seconds)
        results.append(result)
    ens = ensemble.combine(results, dataset.y_train, dataset.y_test)
    ensemble.write(run_dir, ens, dataset.y_train)
    log.info("results in %s\n%s", run_dir, ensemble.summary(ens))
    return ens


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the mean CV accuracy (the value a sweeper optimises)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = {p.name for p in run_dir.iterdir()} <= {".hydra", "cv.log"}
    try:
        return run(cfg, run_dir).metrics["cv_mean"]
    except UserError as e:
        log.error("%s", e)
        if fresh:  # nothing of value there yet: leave no trace of a run that never started
            logging.shutdown()
            shutil.rmtree(run_dir, ignore_errors=True)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

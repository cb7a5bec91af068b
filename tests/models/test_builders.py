"""The default CNN has the recipe's layers."""
from __future__ import annotations

import pytest
from keras import layers

from src.models import kfold_cnn


def test_kfold_cnn_layers():
    model = kfold_cnn((28, 28, 1), 10, dropout=0.4)
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides, c.padding) for c in convs] == [
        (32, (3, 3), (1, 1), "valid"), (32, (3, 3), (1, 1), "valid"), (32, (5, 5), (2, 2), "same"),
        (64, (3, 3), (1, 1), "valid"), (64, (3, 3), (1, 1), "valid"), (64, (5, 5), (2, 2), "same"),
        (128, (4, 4), (1, 1), "valid"),
    ]
    assert sum(isinstance(l, layers.BatchNormalization) for l in model.layers) == 7
    assert [l.rate for l in model.layers if isinstance(l, layers.Dropout)] == [0.4, 0.4, 0.4]
    assert model.layers[-1].units == 10 and model.layers[-1].activation.__name__ == "softmax"
    assert model.output_shape == (None, 10)


def test_fused_batch_norm_matches_keras_and_survives_saving(tmp_path):
    import keras
    import numpy as np

    from src.models import FusedBatchNorm

    x = np.random.default_rng(0).normal(2.0, 3.0, (16, 6, 6, 4)).astype("float32")
    fused, plain = FusedBatchNorm(momentum=0.9), layers.BatchNormalization(momentum=0.9)
    fused.build(x.shape), plain.build(x.shape)
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), atol=1e-5)
    # The fused kernel reports the unbiased variance: n/(n-1) = 576/575 here, a 0.2% difference.
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=3e-3)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=3e-3, atol=1e-3)

    model = kfold_cnn((28, 28, 1), 10)
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert any(isinstance(l, FusedBatchNorm) for l in loaded.layers)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "mlp", "simple_cnn", "convbn", "autoencoder_classifier"])
def test_each_experiments_model_builds_from_its_config_and_trains_a_step(name):
    """In-process and quick: test_experiments runs these recipes whole under -m slow."""
    import keras
    import numpy as np
    from conftest import compose_config
    from hydra.utils import instantiate

    cfg = compose_config([f"experiment={name}"])
    model = instantiate(cfg.model)(input_shape=(28, 28, 1), num_classes=10)
    model.compile(optimizer="adam", loss=cfg.loss)
    x = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(32) % 10, 10)
    loss = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][-1]
    assert np.isfinite(loss) and model.predict(x[:4], verbose=0).shape == (4, 10)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_resnet_builds_from_its_config_and_trains_a_step_on_any_shape(shape):
    import keras
    import numpy as np
    from conftest import compose_config
    from hydra.utils import instantiate

    cfg = compose_config(["model=resnet", "model.width=8", "model.blocks=[1,1]"])
    model = instantiate(cfg.model)(input_shape=shape, num_classes=5)
    assert sum(isinstance(l, layers.Add) for l in model.layers) == 2 and model.output_shape == (None, 5)
    strides = [c.strides for c in model.layers if isinstance(c, layers.Conv2D) and c.kernel_size == (3, 3)]
    assert strides == [(1, 1), (1, 1), (1, 1), (2, 2), (1, 1)]  # stem, stage 1, stage 2 halves the image
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (16, *shape)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(16) % 5, 5)
    loss = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][-1]
    assert np.isfinite(loss) and model.predict(x[:4], verbose=0).shape == (4, 5)

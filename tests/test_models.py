"""The default CNN has the recipe's layers."""
from __future__ import annotations

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

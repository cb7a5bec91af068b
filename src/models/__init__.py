"""The networks: builders (`model=NAME` names one in conf/model/NAME.yaml), their custom layers,
and running a model over images (src.models.inference).

`src.models.<builder>` is the `_target_` that configs name and that run.json records, and
importing this package registers the custom layers that saved models name: both are part of
what older run dirs need, so the names below stay.
"""
from src.models.builders import autoencoder_classifier, convbn, kfold_cnn, mlp, resnet, simple_cnn, softmax
from src.models.layers import BatchNormalization, FusedBatchNorm, ReconstructionLoss, load_model

__all__ = ["autoencoder_classifier", "convbn", "kfold_cnn", "mlp", "resnet", "simple_cnn", "softmax",
           "BatchNormalization", "FusedBatchNorm", "ReconstructionLoss", "load_model"]

"""Training: the tf.distribute strategy and thread settings, and one fold's fit with its
per-epoch checkpoint, progress line and predictions."""

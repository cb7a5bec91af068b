"""Training: the live strategy (tf.distribute, or keras.distribution on JAX) and thread settings,
and one fold's fit with its per-epoch checkpoint, progress line and predictions."""

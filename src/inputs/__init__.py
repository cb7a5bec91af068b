"""Inputs: the competition's files read and checked into arrays, the K-fold split, and the
tf.data pipelines (augmented training batches, plain evaluation and prediction batches)."""

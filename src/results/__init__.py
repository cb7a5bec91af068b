"""Results of finished folds and runs: the ensemble and submission, blends of runs, the report
and its pictures, the MLflow record. Nothing here imports TensorFlow."""

"""K-fold CNN ensembles for image-as-CSV competitions (Kaggle Digit Recognizer first)."""
import os

# TensorFlow's C++ start-up chatter buries the run's own log; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

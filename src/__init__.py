"""K-fold CNN ensembles for image-as-CSV competitions (Kaggle Digit Recognizer first)."""
from src import quiet
from src.runtime import backend

quiet.install()  # before any module imports TensorFlow: its C++ start-up lines stay off the console
backend.default()  # before any module imports Keras: a backend that is installed (src.cv may choose another)
backend.cpu_kernels()  # before TensorFlow's import: oneDNN on every x86-64 CPU, not only the newest

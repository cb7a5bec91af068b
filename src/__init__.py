"""K-fold CNN ensembles for image-as-CSV competitions (Kaggle Digit Recognizer first)."""
from src import quiet

quiet.install()  # before any module imports TensorFlow: its C++ start-up lines stay off the console

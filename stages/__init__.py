"""The sign-language recognition pipeline: one module per DVC stage, shared code in `stages.lib`.

Stages (run in this order by `dvc repro`, each also as `python -m stages.<name>`):
generate, sample, extract, train, evaluate.
"""
import os

# TensorFlow's C++ start-up chatter hides the lines users need; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

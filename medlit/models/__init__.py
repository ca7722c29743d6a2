"""Classifiers trained from scratch on medlit's data, cached by a hash of their configuration."""

from medlit.models.classifier import Classifier, ModelConfig, build_model
from medlit.models.training import evaluate, load_or_train, train_model

__all__ = ["Classifier", "ModelConfig", "build_model", "evaluate", "load_or_train", "train_model"]

"""Models trained from scratch on medlit's data: a registry of model kinds, each with its builder, its training
recipe and the capabilities it offers to explainers; trained models are cached by a hash of their configuration.

To add a model kind, write one module that registers a builder with ``register_model_kind`` and import it below.
"""

from medlit.models import resnet, vit  # noqa: F401  (registration)
from medlit.models.capabilities import capabilities_of, missing_capabilities
from medlit.models.config import ModelConfig
from medlit.models.registry import MODEL_KINDS, ModelKind, build_model, register_model_kind
from medlit.models.resnet import ResNetClassifier
from medlit.models.training import evaluate, load_or_train, train_model

__all__ = ["MODEL_KINDS", "ModelConfig", "ModelKind", "ResNetClassifier", "build_model", "capabilities_of",
           "evaluate", "load_or_train", "missing_capabilities", "register_model_kind", "train_model"]

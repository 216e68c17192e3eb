"""Models: the Classifier wrapper, the architecture registry, checkpoints and training."""

from medfool.models.architectures import architectures, build, register
from medfool.models.checkpoint import load_classifier, read_header, save_checkpoint
from medfool.models.classifier import Classifier, ModelMeta

__all__ = ["Classifier", "ModelMeta", "architectures", "build", "load_classifier", "read_header",
           "register", "save_checkpoint"]

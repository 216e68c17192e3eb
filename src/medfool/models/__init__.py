"""Models: the Classifier wrapper, the architecture registry, checkpoints and training."""

from medfool.models import zoo  # noqa: F401  (registers the MONAI architectures)
from medfool.models.architectures import architectures, build, register
from medfool.models.checkpoint import load_classifier, read_header, save_checkpoint
from medfool.models.classifier import Classifier, ModelMeta
from medfool.models.ensemble import ensemble_classifier

__all__ = ["Classifier", "ModelMeta", "architectures", "build", "ensemble_classifier", "load_classifier", "read_header",
           "register", "save_checkpoint"]

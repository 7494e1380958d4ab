"""swinkit: Swin, Video Swin and Shunted Transformers — exact, fast and practical."""
from swinkit.checkpoints import CheckpointError, LoadReport, load_checkpoint, load_model, save_checkpoint
from swinkit.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["CheckpointError", "LoadReport", "create_model", "list_models", "load_checkpoint", "load_model",
           "save_checkpoint", "__version__"]

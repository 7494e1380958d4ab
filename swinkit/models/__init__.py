"""Model families and the registry."""
from swinkit.models import swin  # noqa: F401  (registers the Swin / Video Swin variants)
from swinkit.models.registry import create_model, is_model, list_models, register_model
from swinkit.models.swin import SwinConfig, SwinTransformer

__all__ = ["create_model", "is_model", "list_models", "register_model", "SwinConfig", "SwinTransformer"]

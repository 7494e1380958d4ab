"""Model families and the registry."""
from swinkit.models import shunted, swin  # importing the families registers their variants
from swinkit.models.registry import create_model, is_model, list_models, register_model
from swinkit.models.shunted import ShuntedConfig, ShuntedTransformer
from swinkit.models.swin import SwinConfig, SwinTransformer

__all__ = ["create_model", "is_model", "list_models", "register_model", "shunted", "swin", "ShuntedConfig",
           "ShuntedTransformer", "SwinConfig", "SwinTransformer"]

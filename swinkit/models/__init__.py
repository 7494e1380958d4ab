"""Model families and the registry."""
from swinkit.models import shunted, swin  # noqa: F401  (register the variants)
from swinkit.models.registry import create_model, is_model, list_models, register_model
from swinkit.models.shunted import ShuntedConfig, ShuntedTransformer
from swinkit.models.swin import SwinConfig, SwinTransformer

__all__ = ["create_model", "is_model", "list_models", "register_model", "ShuntedConfig", "ShuntedTransformer",
           "SwinConfig", "SwinTransformer"]

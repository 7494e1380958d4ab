"""Checkpoint formats, safe loading, adaptation, inflation and export."""
from swinkit.checkpoints.io import CheckpointError, read_checkpoint
from swinkit.checkpoints.load import LoadReport, load_checkpoint
from swinkit.checkpoints.model import CheckpointInfo, describe_checkpoint, inspect_checkpoint, load_model
from swinkit.checkpoints.save import save_checkpoint

__all__ = ["CheckpointError", "CheckpointInfo", "LoadReport", "describe_checkpoint", "inspect_checkpoint",
           "load_checkpoint", "load_model", "read_checkpoint", "save_checkpoint"]

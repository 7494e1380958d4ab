"""Checkpoint formats, safe loading, adaptation and export."""
from swinkit.checkpoints.io import CheckpointError, read_checkpoint
from swinkit.checkpoints.load import LoadReport, load_checkpoint

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_checkpoint"]

"""N-D building blocks shared by every family."""
from swinkit.layers.checks import check_input
from swinkit.layers.drop import DropPath, drop_path_rates
from swinkit.layers.mlp import Mlp

__all__ = ["check_input", "DropPath", "drop_path_rates", "Mlp"]

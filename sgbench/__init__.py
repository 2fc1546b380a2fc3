"""sgbench: what synthetic gradients (Decoupled Neural Interfaces) actually buy you, measured."""
from .dni import DNI, ConvSG, MLPSG, sg_l2

__all__ = ["DNI", "ConvSG", "MLPSG", "sg_l2"]
__version__ = "0.1.0"

"""sgbench: what synthetic gradients (Decoupled Neural Interfaces) actually buy you, measured.

The DNI boundary for your own models: `from sgbench import DNI, MLPSG` (see sgbench/dni.py).
Importing the package loads no torch; the names below load sgbench.dni (and torch) when first used.
"""
__version__ = "0.1.0"

_DNI_NAMES = ("DNI", "MLPSG", "ConvSG", "BootstrapL2", "sg_l2", "zero_last", "backward")
__all__ = list(_DNI_NAMES)


def __getattr__(name):
    if name in _DNI_NAMES:
        from . import dni
        return getattr(dni, name)
    raise AttributeError(f"module 'sgbench' has no attribute {name!r}")

"""[DNI]'s own numbers, as sgbench/reference.yaml records them (each table with its source and its
verified / recalled status)."""
from __future__ import annotations

from importlib import resources

import yaml


def load_reference() -> dict:
    """sgbench/reference.yaml: [DNI]'s numbers, each table with its source and recalled/verified status."""
    return yaml.safe_load(resources.files("sgbench").joinpath("reference.yaml").read_text())

"""The charlm experiment family: config.py, run.py, tables.py, figures.py (see sgbench/families/__init__.py)."""

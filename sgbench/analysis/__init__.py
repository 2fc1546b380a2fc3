"""Torch-free analysis: statistics over seeds, reading metrics into tables, plotting helpers,
the paper's reference values."""

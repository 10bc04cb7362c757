"""dpfw: a firmware simulator for DP-series networked copiers."""

__version__ = "0.1.0"

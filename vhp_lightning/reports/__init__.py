"""Collectors over sweeps: read run dirs and ``results/*.csv``, write ``results/*.md``."""

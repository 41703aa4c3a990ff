"""``python -m chunkswarm``: the ``chunkswarm`` command (subprocess tests and benchmarks use it)."""

from chunkswarm.cli import cli

cli(prog_name="python -m chunkswarm")

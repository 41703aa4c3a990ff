"""``python -m chunkswarm``: the ``chunkswarm`` command (subprocess tests and benchmarks use it)."""

from chunkswarm.entry import main

main(prog_name="python -m chunkswarm")

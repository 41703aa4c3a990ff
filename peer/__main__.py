"""``python -m peer seed|get|ls ...``."""

from peer.cli import main

main(prog_name="python -m peer")

"""``python -m tracker``: the same command as ``chunkswarm tracker``."""

from tracker.cli import tracker_command

if __name__ == "__main__":
    tracker_command(prog_name="python -m tracker")

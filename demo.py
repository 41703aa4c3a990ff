#!/usr/bin/env python3
"""chunkswarm in one command: a tracker and four peers on loopback swarm one file.

Two peers publish the file, two download it at once; every chunk received is
logged with its source, and a table at the end says who moved what and
whether every copy's SHA-256 matches the original. Exit status 0 means both
downloads are complete and byte-identical.
"""

from __future__ import annotations

import pathlib
import sys

import click
import trio

from chunkswarm.console import LOG_LEVELS, setup_logging, stderr_console
from chunkswarm.demo import DemoConfig, run_demo
from common.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from common.wording import plural

HERE = pathlib.Path(__file__).resolve().parent
SAMPLE = HERE / "sample_files" / "dir1" / "file1_dir1.txt"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--peers", type=click.IntRange(min=2), default=4, show_default=True,
              help="Peers in the swarm: half upload the file, the rest download it at once.")
@click.option("--file", "source", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=SAMPLE,
              help="The file to swarm (a large one shows progress bars)  [default: sample_files/dir1/file1_dir1.txt]")
@click.option("--chunk-size", type=click.IntRange(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), default=None,
              help="Chunk size in bytes  [default: from the file's size, as every publisher does: 1024 for the sample]")
@click.option("--keep", is_flag=True, help="Keep the temporary folder with every peer's share, downloads and state.")
@click.option("--keep-running", is_flag=True, help="Afterwards keep the tracker and peers up for demo_peer.py until Ctrl-C.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True)
def main(peers: int, source: pathlib.Path, chunk_size: int | None, keep: bool, keep_running: bool, log_level: str) -> None:
    """Start a tracker and PEERS peers on 127.0.0.1 and watch them swarm a file."""
    setup_logging(log_level)
    console = stderr_console()
    config = DemoConfig(
        source=source,
        peers=peers,
        chunk_size=chunk_size,
        keep=keep,
        keep_running=keep_running,
        join_command=(sys.executable, str(HERE / "demo_peer.py")),
    )
    try:
        outcome = trio.run(run_demo, config, console)
    except KeyboardInterrupt:
        console.print("interrupted: the peers and the tracker are stopped", highlight=False)
        raise click.exceptions.Exit(130) from None
    if not outcome.ok:
        raise click.ClickException("the demo failed: " + "; ".join(outcome.problems))
    downloaders = [report for report in outcome.peers if report.role == "downloader"]
    labels = {report.label for report in downloaders}
    traded = sum(count for report in downloaders for label, count in report.sources if label in labels)
    console.print(f"[green]OK[/]: {', '.join(report.label for report in downloaders)} each hold a byte-identical copy of {source.name}; "
                  f"the downloaders traded {plural(traded, 'chunk')} with each other", highlight=False)  # fmt: skip


if __name__ == "__main__":
    main()

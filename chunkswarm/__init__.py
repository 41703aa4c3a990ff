"""chunkswarm: BitTorrent-like file sharing over a framed opcode protocol."""

from common.version import __version__

__all__ = ["__version__"]

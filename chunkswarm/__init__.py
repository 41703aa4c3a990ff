"""chunkswarm: BitTorrent-like file sharing over a framed opcode protocol."""

__version__ = "0.1.0"

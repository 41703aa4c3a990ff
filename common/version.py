"""The version of chunkswarm: one place for the engine (agents in HELLO/WELCOME) and the app."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

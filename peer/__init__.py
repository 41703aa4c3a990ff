"""The chunkswarm peer engine: chunk server, downloader, storage and tracker client (no CLI: that is ``chunkswarm``)."""

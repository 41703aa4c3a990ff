"""The chunkswarm peer: chunk server, downloader, storage, tracker client and CLI."""

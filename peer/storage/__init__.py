"""Everything a peer keeps on disk, one module per job.

* :mod:`~peer.storage.library`: the files a peer serves (:class:`HeldFile`, :class:`Library`).
* :mod:`~peer.storage.manifest_cache`: manifests of published files, so an unchanged file is hashed once.
* :mod:`~peer.storage.chunk_io`: reading, verifying, writing and hashing chunks (O_DIRECT, fadvise).
* :mod:`~peer.storage.read_back`: each written chunk read back and checked while the download goes on.
* :mod:`~peer.storage.part_file`: a download's part file, its resume state, and its final placement.
* :mod:`~peer.storage.fs`: the file-system primitives the others share (errors, atomic writes).

Functions here are synchronous and blocking on purpose: the trio code runs
them through ``trio.to_thread.run_sync`` (chunk-sized reads, writes and hashes
release the GIL, so two worker threads really use two cores).
"""

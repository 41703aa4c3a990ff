"""Folder sync (``chunkswarm sync``): scanning a folder, applying others' changes safely, and the loop that keeps it in step with its collection."""

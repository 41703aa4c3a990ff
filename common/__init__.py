"""Sans-I/O core of chunkswarm: errors, frames, messages, codec and manifests.

Nothing in this package opens a socket or imports trio; ``tracker`` and
``peer`` are thin trio shells around it.
"""

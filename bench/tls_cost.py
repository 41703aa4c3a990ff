"""CPU cost of a private swarm's TLS per GiB of chunks, in one process, without the network: where the encrypted figure's limit is.

    .venv/bin/python bench/tls_cost.py [--size-mib 256] [--chunk-size 1048576]

A TLS 1.3 client and server made with ``common.tls`` (the contexts every node
uses) talk over memory BIOs. Chunks are encrypted the way the chunk server
does (``SSLObject.write`` of a whole chunk), the ciphertext is moved between
the BIOs (the copies the real streams make: out of the BIO, into the other),
and decrypted the way a download does (``SSLObject.read`` into the chunk
buffer, record after record). Each step is timed in CPU seconds of this thread
(``time.thread_time``), so a busy machine slows it down but hardly skews it.
For comparison: SHA-256 of the same bytes (what a download adds per chunk in
an open swarm as well). The last line of stdout is one JSON object with
``cipher`` (what TLS negotiated) and CPU seconds per GiB: ``encrypt``,
``bio_copies``, ``decrypt``, ``sha256``, and their sum over both ends.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import ssl
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from common.identity import NodeKey
from common.tls import client_context, server_context

GIB = 2**30


def connected_pair() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """(client, its outgoing BIO, server, its incoming BIO) after the TLS 1.3 handshake."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context().wrap_bio(c_in, c_out)
    server = server_context(NodeKey.generate()).wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        if c_out.pending:
            s_in.write(c_out.read())
        if s_out.pending:
            c_in.write(s_out.read())
    if client.version() != "TLSv1.3" or server.version() != "TLSv1.3":
        raise SystemExit(f"handshake did not finish with TLS 1.3: {client.version()}")
    return client, c_out, server, s_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=2**20)
    options = parser.parse_args()
    client, outgoing, server, incoming = connected_pair()
    chunk = memoryview(os.urandom(options.chunk_size))
    received = bytearray(options.chunk_size)
    view = memoryview(received)
    chunks = options.size_mib * 2**20 // options.chunk_size
    encrypt = copies = decrypt = 0.0
    for _ in range(chunks):
        t0 = time.thread_time()
        client.write(chunk)
        t1 = time.thread_time()
        incoming.write(outgoing.read())
        t2 = time.thread_time()
        filled = 0
        while filled < len(received):
            filled += server.read(len(received) - filled, view[filled:])
        t3 = time.thread_time()
        encrypt, copies, decrypt = encrypt + t1 - t0, copies + t2 - t1, decrypt + t3 - t2
    if bytes(received) != bytes(chunk):
        raise SystemExit("decrypted bytes differ from the chunk")
    t0 = time.thread_time()
    for _ in range(chunks):
        hashlib.sha256(chunk).digest()
    sha256 = time.thread_time() - t0
    gib = chunks * options.chunk_size / GIB
    cipher = client.cipher()
    result = {
        "cipher": cipher[0] if cipher else None,
        "openssl": ssl.OPENSSL_VERSION,
        "size_mib": options.size_mib,
        "chunk_size": options.chunk_size,
        "cpu_s_per_gib": {
            "encrypt": round(encrypt / gib, 3),
            "bio_copies": round(copies / gib, 3),
            "decrypt": round(decrypt / gib, 3),
            "tls_total": round((encrypt + copies + decrypt) / gib, 3),
            "sha256": round(sha256 / gib, 3),
        },
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

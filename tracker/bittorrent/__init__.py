"""The BitTorrent tracker protocol beside the native one (issue 14).

``swarms`` holds the state (pure, synchronous); ``requests`` parses announce
and scrape query strings, ``http_framing`` HTTP/1.1 requests and
``udp_packets`` BEP 15 datagrams (all sans-I/O); ``replies`` encodes the
answers (bencoded, through bencode2); ``connection_ids`` makes and checks
UDP connection ids; ``http`` and ``udp`` are the trio shells;
``settings`` is their configuration.
"""

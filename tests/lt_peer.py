"""A real BitTorrent client for the tests: Debian's libtorrent, run as ``/usr/bin/python3 tests/lt_peer.py``.

    lt_peer.py seed|leech TORRENT SAVE_DIR LISTEN_PORT SECONDS

Loopback only, DHT, LSD, UPnP, NAT-PMP and uTP off, several connections per
IP allowed (every peer of a test is on 127.0.0.1). A seeder serves until it
is killed or SECONDS pass; a leecher prints ``finished`` once every piece has
passed its hash check and is flushed to the file, then exits 0 (1 when
SECONDS pass first). Tracker replies and errors are printed as they come,
for the test's log. Not imported by the project: libtorrent's bindings exist
for the system Python only.
"""

import sys
import time

import libtorrent as lt


def main() -> int:
    role, torrent, save, port, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    session = lt.session({
        "listen_interfaces": f"127.0.0.1:{port}", "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
        | lt.alert.category_t.tracker_notification,
    })
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save
    handle = session.add_torrent(params)
    deadline = time.time() + seconds
    finished = False
    while time.time() < deadline:
        session.wait_for_alert(200)
        for alert in session.pop_alerts():
            if isinstance(alert, (lt.tracker_reply_alert, lt.tracker_error_alert, lt.tracker_warning_alert)):
                print(role, type(alert).__name__, alert.message(), flush=True)
            elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                print(role, "ERROR", alert.message(), flush=True)
            elif isinstance(alert, lt.torrent_finished_alert) and role == "leech" and not finished:
                finished = True
                handle.flush_cache()
            elif isinstance(alert, lt.cache_flushed_alert) and finished:
                print("finished", flush=True)
                return 0
    return 0 if role == "seed" else 1


if __name__ == "__main__":
    sys.exit(main())

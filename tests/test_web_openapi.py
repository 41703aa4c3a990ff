"""schemathesis fuzzes ``/api/v1`` against its OpenAPI document, over real HTTP to a real tracker.

Every generated request (valid ones and, in negative mode, invalid ones) must
get an answer that is not a 500 and that matches the document: its status
code, its content type, its body's schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.tracker_client_helper import make_manifest
from tests.web_helpers import TrackerThread
from tracker.bittorrent.settings import BitTorrentConfig
from tracker.config import TrackerConfig
from tracker.web.openapi import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def api_tracker() -> Iterator[TrackerThread]:
    config = TrackerConfig(port=0, http_host="127.0.0.1", bittorrent=BitTorrentConfig(http=("127.0.0.1", 0)))
    with TrackerThread(config) as running:
        song = make_manifest("Holiday Song.ogg", chunks=6)
        running.seed(song, 7001)
        running.seed(song, 7002, chunks=[(0, 2)])
        running.seed(make_manifest("<b>notes</b.txt".replace("/", ""), chunks=1), 7003)
        assert running.running is not None and running.running.bittorrent.http is not None
        announce = f"http://127.0.0.1:{running.running.bittorrent.http[1]}/announce?info_hash={'%01' * 20}&peer_id={'x' * 20}&port=6881&left=0"
        assert b"failure reason" not in httpx.get(announce, timeout=10).content  # one BitTorrent swarm, so /api/v1/torrents lists one
        yield running


def test_the_served_document_is_the_one_fuzzed(api_tracker: TrackerThread) -> None:
    served = httpx.get(api_tracker.url + "api/v1/openapi.json", timeout=10).json()
    assert served == openapi_document()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_document(case: schemathesis.Case, api_tracker: TrackerThread) -> None:
    case.call_and_validate(base_url=api_tracker.url.rstrip("/"), timeout=10)

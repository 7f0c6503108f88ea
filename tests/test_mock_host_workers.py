"""Hosts made by the mock_host fixture as workers of one Envoy: one SharedStore (docs/testing.md,
"Several workers of one Envoy"; examples/rate_limit's tests show a limit across workers)."""

from __future__ import annotations

from pathlib import Path

PROBE = Path(__file__).resolve().parent / "plugins" / "mock_host_probe"
REQUEST = {":method": "GET", ":authority": "a"}


def test_workers_share_data_and_queues_through_one_store(mock_host, host_mode):
    first = mock_host(PROBE, mode=host_mode)
    stream = first.http_stream()
    stream.send_request_headers({**REQUEST, ":path": "/shared"})
    assert stream.request_header("x-hits") == "1"
    second = mock_host(PROBE, mode=host_mode, shared=first.shared)  # another worker
    alone = mock_host(PROBE, mode="wasm" if host_mode == "native" else "native")  # another Envoy
    stream = second.http_stream()
    stream.send_request_headers({**REQUEST, ":path": "/shared"})
    assert stream.request_header("x-hits") == "2"
    assert second.shared_data["probe.hits"] == b"2" and alone.shared_data.get("probe.hits") is None
    # both roots registered probe.queue: the one that registered last gets its notifications
    stream = alone.http_stream()
    stream.send_request_headers({**REQUEST, ":path": "/queue", "x-message": "elsewhere"})
    second.http_stream().send_request_headers({**REQUEST, ":path": "/queue", "x-message": "m1"})
    assert second.logs.find("probe: dequeued m1") and not second.logs.find("elsewhere")

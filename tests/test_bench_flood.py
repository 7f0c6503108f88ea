"""The soak's load generators (pywasm_sdk.tooling.bench.flood) against the benchmarks' own
upstream process: every exchange is counted, and an answer that is not the expected one is."""

from __future__ import annotations

import pytest

from pywasm_sdk.tooling.bench import flood
from pywasm_sdk.tooling.bench.upstream import Upstream


@pytest.fixture(scope="module")
def http_upstream():
    with Upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def tcp_upstream():
    with Upstream(tcp=True) as upstream:
        yield upstream


def test_http_flood_counts_every_answer(http_upstream):
    load = flood.HttpFlood(http_upstream.port, flood.HttpFlood.get("/x"), connections=4,
                           expect_in_head=(b"\r\ncontent-type: text/plain",))
    try:
        first = load.run(1000)
        second = load.run(7)  # the connections are kept between runs
    finally:
        load.close()
    assert (first.done, first.unexpected, first.errors) == (1000, 0, 0)
    assert (second.done, second.unexpected) == (7, 0)
    assert first.seconds > 0


def test_http_flood_notices_a_wrong_answer(http_upstream):
    wrong_header = flood.HttpFlood(http_upstream.port, flood.HttpFlood.get("/x"), connections=2,
                                   expect_in_head=(b"\r\nx-served-by: me",))
    wrong_status = flood.HttpFlood(http_upstream.port, flood.HttpFlood.get("/x"), expect_status=404)
    try:
        header = wrong_header.run(50)
        status = wrong_status.run(3)
    finally:
        wrong_header.close()
        wrong_status.close()
    assert (header.done, header.unexpected) == (50, 50)
    assert header.examples[0].startswith(b"HTTP/1.1 200 OK") and len(header.examples) == 5
    assert status.unexpected == 3


@pytest.mark.parametrize("buffer, end", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1", 40),   # one answer, the next begun
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nok", None),         # body incomplete
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 59),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n", None),
    (b"HTTP/1.1 204 No Content\r\nx: y\r\n\r\n", 33),                   # no body: the head
    (b"HTTP/1.1 200 OK\r\ncontent-len", None),                           # head incomplete
])
def test_response_framing(buffer, end):
    found = flood._response_end(buffer)
    assert (found[0] if found else None) == end


def test_tcp_flood_from_several_sources(tcp_upstream):
    message = b"one line\n"
    load = flood.TcpFlood(tcp_upstream.port, message, message, sources=("127.0.0.2", "127.0.0.3"),
                          connections=6)
    result = load.run(300)
    assert (result.done, result.unexpected, result.errors) == (300, 0, 0)
    wrong = flood.TcpFlood(tcp_upstream.port, message, b"greeting\n" + message).run(5)
    assert wrong.unexpected == 5 and wrong.examples[0] == message


def test_tcp_flood_counts_refused_connections():
    from pywasm_sdk.tooling.envoy import free_port

    result = flood.TcpFlood(free_port(), b"x\n", b"x\n", connections=2).run(4)
    assert (result.done, result.errors) == (0, 4)


WRK_REPORT = """Running 5s test @ http://127.0.0.1:10000/soak
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   611.01us  152.32us   4.41ms   85.96%
    Req/Sec    13.07k   409.15    13.71k    80.00%
  Latency Distribution
     50%  584.00us
     75%  660.00us
     90%  774.00us
     99%    1.06ms
  65034 requests in 5.00s, 9.80MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 17
Requests/sec:  13004.61
Transfer/sec:      1.96MB
"""


def test_wrk_report_is_read():
    result = flood.parse_wrk(WRK_REPORT)
    assert (result.done, result.unexpected, result.errors) == (65034, 17, 3)
    clean = flood.parse_wrk("\n".join(line for line in WRK_REPORT.splitlines()
                                      if "errors" not in line and "Non-2xx" not in line))
    assert (clean.done, clean.unexpected, clean.errors) == (65034, 0, 0)
    with pytest.raises(ValueError, match="not a wrk report"):
        flood.parse_wrk("wrk: command not found")

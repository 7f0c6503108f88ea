"""A plugin for the mock host's own tests: each request path exercises one part of the ABI.

Not an example to copy. HTTP (by ``:path``):
  /echo        reads every request header and writes them all back (round trip of str values)
  /raise       raises inside on_request_headers (the SDK's exception boundary)
  /bad-return  on_response_headers returns a value the ABI cannot carry (logged, CONTINUE)
  /abort       os.abort() (a trap without a Python traceback; wasm only)
  /local       answers 403 itself; every response gets x-probe from on_response_headers
  /auth        awaits an HTTP call to cluster "auth"; 200 -> x-auth header, else a local 403
  /grpc        awaits a gRPC call to cluster "grpc"; the reply becomes header x-grpc
  /body        buffers the request body and upper-cases it
  /props       copies properties into request headers x-prop-*
  /state       set_property + get_property, and set_envoy_filter_state
  /metrics     counter, gauge and histogram
  /shared      counts requests in shared data
  /queue       enqueues the x-message header; on_queue_ready logs what it dequeues
  /print       print() and the logging module
  /reset       resets the stream
  /env         copies os.environ["PROBE_ENV"] into a request header
  /bad-hostcall-type, -range   a raw hostcall with an argument the bridge cannot convert (raises)
  /bad-hostcall-text           a raw hostcall with text that is not valid Unicode (made safe)
  /late        reads the request headers and request.path in on_response_headers (Envoy no longer
               holds them there)
  /hold        pauses; the next tick (or a /release request) adds x-held / x-released-by to the
               request headers of each held stream, through that stream's own view, and resumes it
  /types       the type and value of end_of_stream as seen by the plugin (x-eos)
  /clock       time.time_ns(), time.monotonic_ns() and the host's clock (x-time-ns, ...)
  /mapping     the request headers as a mapping: len, keys, dict (x-len, x-keys, x-dict)
  /wrong-use   floats where the host takes ints: each raises TypeError the plugin catches (x-caught)
  /unawaited   calls self.http_call(...) without await (the SDK warns; no call is made)
  /shared-keys shared-data keys that differ only in bytes that are not UTF-8 stay apart (x-shared)
  /levels      a line at each level through log.* (those below the proxy's level would raise if
               they were formatted: their argument does not fit %d) and one through print()
  /header-kinds  header names and values of every kind the SDK takes (str, non-ASCII str, bytes,
               bytearray, memoryview, a str with a lone surrogate read from a non-UTF-8 header,
               x-raw) are added, replaced and removed; an int raises TypeError (x-caught)
Root: with plugin configuration "tick" the timer ticks every second, counting in metric "ticks";
with "linger", on_done answers False at shutdown and the next tick calls done().
TCP: the connection's cluster is chosen from the source address's last digit; upstream data is
upper-cased; downstream data is held back until it contains a newline.
"""

import json
import logging
import os
import time
from collections.abc import Mapping

from pywasm_sdk import hostcalls
from pywasm_sdk import (Action, BadArgument, Counter, Gauge, Histogram, HttpContext, RootContext, SharedQueue,
                        StreamContext, get_current_time_ns, get_property, get_property_int, get_property_str,
                        get_shared_data, log, properties, register, set_envoy_filter_state, set_property,
                        set_shared_data, update_shared_data)

import helpers

REQUESTS = Counter("probe.requests")
INFLIGHT = Gauge("probe.inflight")
SIZES = Histogram("probe.sizes")
TICKS = Counter("ticks")
DELETED = Counter("probe.deleted")
logger = logging.getLogger("probe")


class ProbeHttp(HttpContext):
    async def on_request_headers(self, num_headers, end_of_stream):
        path = self.request_headers.get(":path") or "/"
        self.path = path
        if path == "/echo":
            self.request_headers.set_all(self.request_headers.pairs())
        elif path == "/raise":
            helpers.explode("on_request_headers")
        elif path == "/abort":
            os.abort()
        elif path == "/local":
            self.send_local_response(403, "denied by probe\n", headers={"x-why": "probe"})
            return Action.PAUSE
        elif path == "/auth":
            answer = await self.http_call("auth", path="/check", headers={"x-user": "alice"}, timeout=2)
            if answer.status != 200:
                self.send_local_response(403, f"auth said {answer.status}\n")
                return Action.PAUSE
            self.request_headers.add("x-auth", answer.header("x-decision") or "yes")
        elif path == "/grpc":
            reply = await self.grpc_call("grpc", "probe.Echo", "Say", b"ping")
            self.request_headers.add("x-grpc", reply.message.decode())
        elif path == "/props":
            for name, value in (("source", properties.source_address()),
                                ("source-port", str(properties.source_port())),
                                ("destination", properties.destination_address()),
                                ("path", properties.request_path()),
                                ("plugin-name", properties.plugin_name()),
                                ("root-id", properties.plugin_root_id()),
                                ("vm-id", properties.plugin_vm_id()),
                                ("node-id", properties.node_id()),
                                ("connection-id", str(properties.connection_id())),
                                ("cluster", properties.cluster_name()),
                                ("missing", str(get_property(("no", "such")))),
                                ("header", get_property_str(("request", "headers", "x-in")))):
                self.request_headers.add(f"x-prop-{name}", value if value is not None else "<none>")
        elif path == "/state":
            set_property("probe_key", b"probe-value")
            self.request_headers.add("x-state", get_property_str("probe_key") or "<none>")
            set_envoy_filter_state("envoy.network.upstream_server_name", "probe.example")
        elif path == "/metrics":
            REQUESTS.increment()
            INFLIGHT.add(3)
            INFLIGHT.add(-1)
            SIZES.record(num_headers)
            self.request_headers.add("x-requests", str(REQUESTS.value))
        elif path == "/shared":
            hits = update_shared_data("probe.hits", lambda old: str(int(old or b"0") + 1))
            self.request_headers.add("x-hits", hits.decode())
        elif path == "/queue":
            self.root.queue.enqueue(self.request_headers.get("x-message") or "")
        elif path == "/print":
            print("probe: hello from print()")
            logger.warning("probe: hello from logging")
        elif path == "/reset":
            self.reset()
            return Action.PAUSE
        elif path == "/env":
            self.request_headers.add("x-env", os.environ.get("PROBE_ENV", "<unset>"))
        elif path == "/hold":
            self.root.held.append(self)
            return Action.PAUSE
        elif path == "/release":
            for held in self.root.held:
                held.request_headers.add("x-released-by", str(self.context_id))
                held.resume_request()
            self.root.held.clear()
        elif path == "/types":
            self.request_headers.add("x-eos", f"{type(end_of_stream).__name__}:{end_of_stream}")
        elif path == "/clock":
            host_ns = get_current_time_ns()
            self.request_headers.add("x-time-ns", str(time.time_ns()))
            self.request_headers.add("x-time", repr(time.time()))
            self.request_headers.add("x-host-ns", str(host_ns))
            self.request_headers.add("x-monotonic-ns", str(time.monotonic_ns()))
            self.request_headers.add("x-clock-agrees", str(abs(time.time_ns() - host_ns) < 1_000_000_000))
        elif path == "/mapping":
            headers = self.request_headers
            seen = {"x-len": str(len(headers)), "x-keys": ",".join(headers.keys()),
                    "x-dict": json.dumps(dict(headers), sort_keys=True),
                    "x-is-mapping": str(isinstance(headers, Mapping))}
            for name, value in seen.items():
                headers.add(name, value)
        elif path == "/wrong-use":
            caught = []
            for attempt in (lambda: SIZES.record(1.5), lambda: INFLIGHT.set(1.5),
                            lambda: self.root.set_tick_period(1.5), lambda: REQUESTS.increment(0.5)):
                try:
                    attempt()
                except TypeError:
                    caught.append("TypeError")
            self.request_headers.add("x-caught", ",".join(caught))
        elif path == "/unawaited":
            self.http_call("auth", path="/never")
        elif path == "/shared-keys":
            set_shared_data(b"probe.key\xff", "ff")
            set_shared_data("probe.key\udcfe", "fe")  # a str from non-UTF-8 bytes is those bytes
            found = [get_shared_data(k) for k in ("probe.key\udcff", b"probe.key\xfe", "probe.key\ufffd")]
            self.request_headers.add("x-shared", ",".join(f.value.decode() if f else "-" for f in found))
        elif path == "/levels":
            for write in (log.trace, log.debug, log.info):
                write("probe: %d", "not a number")
            log.warning("probe: warning %s", 1)
            log.error("probe: error %s", 2)
            log.critical("probe: critical %s", 3)
            print("probe: print at info")
        elif path == "/header-kinds":
            headers = self.request_headers
            headers.add("x-str", "plain")
            headers.add("x-utf8", "gr\u00fc\u00df \u2713")
            headers.add(b"x-bytes", b"\xff\xfe")
            headers.add(bytearray(b"x-bytearray"), bytearray(b"ba"))
            headers.add(memoryview(b"x-memoryview"), memoryview(b"mv"))
            headers.add("x-surrogate", headers["x-raw"])  # not UTF-8: read back as surrogates
            headers.replace("x-str", "replaced")
            headers.add("x-gone", "soon")
            headers.remove(b"x-gone")
            headers.add("x-lookup", str(headers.get("x-utf8") == "gr\u00fc\u00df \u2713"))
            try:
                headers.add("x-int", 5)  # type: ignore[arg-type]
            except TypeError as exc:
                headers.add("x-caught", str(exc))
        elif path.startswith("/bad-hostcall-"):
            try:
                if path == "/bad-hostcall-type":
                    hostcalls.proxy_log(2, b"bytes where the ABI takes a string")
                elif path == "/bad-hostcall-text":
                    hostcalls.proxy_log(2, "not \udcff unicode")
                else:
                    hostcalls.proxy_set_tick_period_milliseconds(-1)
            except BaseException as exc:
                log.info("probe: caught %s", type(exc).__name__)
        return Action.CONTINUE

    def on_request_body(self, body_size, end_of_stream):
        if self.path != "/body":
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE
        self.request_body.replace(helpers.shout(self.request_body.read()))
        return Action.CONTINUE

    def on_response_headers(self, num_headers, end_of_stream):
        path = getattr(self, "path", "")
        if path == "/bad-return":
            return "not an action"
        if path == "/late":
            try:
                late = self.request_headers.get(":path")
            except BadArgument:
                late = "<unreachable>"
            self.response_headers.add("x-late", str(late))
            self.response_headers.add("x-late-property", str(properties.request_path()))
        self.response_headers.add("x-probe", "1")
        return Action.CONTINUE

    def on_log(self):
        log.info("probe: log %s %s", self.path if hasattr(self, "path") else "-",
                 self.response_headers.get(":status"))

    def on_delete(self):
        # a stream context with an on_delete of its own: the bridge delivers each delete at once
        DELETED.increment()


class ProbeTcp(StreamContext):
    def on_new_connection(self):
        source = properties.source_address() or ""
        digit = source.rpartition(":")[0][-1:]
        cluster = "even-cluster" if digit.isdigit() and int(digit) % 2 == 0 else "odd-cluster"
        set_envoy_filter_state("envoy.tcp_proxy.cluster", cluster)
        log.info("probe: %s -> %s (port %s)", source, cluster, get_property_int(("source", "port")))
        return Action.CONTINUE

    def on_downstream_data(self, data_size, end_of_stream):
        if end_of_stream:
            log.info("probe: downstream end_of_stream is a %s", type(end_of_stream).__name__)
        data = self.downstream_data.read()
        return Action.CONTINUE if b"\n" in data or end_of_stream else Action.PAUSE

    def on_upstream_data(self, data_size, end_of_stream):
        self.upstream_data.replace(helpers.shout(self.upstream_data.read()))
        return Action.CONTINUE

    def on_downstream_connection_close(self, peer):
        log.info("probe: downstream closed by %s", peer.name)


class ProbeRoot(RootContext):
    http_context = ProbeHttp
    stream_context = ProbeTcp

    def on_configure(self, plugin_config):
        self.queue = SharedQueue.register("probe.queue")
        self.lingering = False
        self.held = []
        if plugin_config in (b"tick", b"linger"):
            self.set_tick_period(1000)
        return True

    def on_tick(self):
        TICKS.increment()
        for held in self.held:  # another context's view acts on that context
            held.request_headers.add("x-held", str(held.context_id))
            held.resume_request()
        self.held.clear()
        if self.lingering:
            log.info("probe: done lingering")
            self.done()

    def on_done(self):
        if self.plugin_config == b"linger":
            self.lingering = True
            return False
        return True

    def on_queue_ready(self, queue_id):
        while (item := self.queue.dequeue()) is not None:
            log.info("probe: dequeued %s", item.decode())


register(ProbeRoot)

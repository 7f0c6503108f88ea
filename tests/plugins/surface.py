"""A plugin using the wider proxy-wasm surface, for end-to-end tests in the real Envoy.

/authz/...   asks the "authz" cluster (await) and answers 403 itself when it says no
/rewrite     has its response body rewritten (buffered until the end of the stream)
/shared      counts requests in shared data (compare-and-swap) across all workers
/slow, /missing-cluster   calls that fail: answered 504 / 502 by the plugin
/hostile     reads an unknown property and echoes a non-UTF-8 header value
/grpc        a unary gRPC call to a cluster that does not speak gRPC: answered 503
/enqueue     puts the request path on a shared queue; on_queue_ready logs it
every response: x-vm (an id per VM), x-greeting (from the VM's environment variables)
a timer ticks every 100 ms; a counter counts requests
"""

import os

from pywasm_sdk import (Action, BadArgument, Counter, GrpcCallError, HttpCallError, HttpContext,
                        RootContext, SharedQueue, get_property, log, properties, register,
                        update_shared_data)

REQUESTS = Counter("surface.requests")
VM_ID = {"value": ""}


class Surface(HttpContext):
    async def on_request_headers(self, num_headers, end_of_stream):
        REQUESTS.increment()
        self.path = self.request_headers.get(":path") or "/"
        if self.path.startswith("/authz/"):
            answer = await self.http_call("authz", path="/check", headers={
                "x-user": self.request_headers.get("x-user") or ""}, timeout=5)
            if answer.status != 200:
                self.send_local_response(403, f"denied by authz ({answer.status})\n",
                                         headers={"x-denied-by": "surface"})
                return Action.PAUSE
            self.request_headers.add("x-authz", answer.header("x-decision") or "")
        elif self.path == "/slow":
            try:
                await self.http_call("authz", path="/slow", timeout=0.2)
            except HttpCallError as exc:
                self.send_local_response(504, f"{exc}\n")
                return Action.PAUSE
        elif self.path == "/missing-cluster":
            try:
                await self.http_call("no-such-cluster")
            except BadArgument as exc:
                self.send_local_response(502, f"{exc}\n")
                return Action.PAUSE
        elif self.path == "/grpc":
            try:
                await self.grpc_call("authz", "test.Authz", "Check", b"\x0a\x05alice", timeout=2)
            except GrpcCallError as exc:
                self.send_local_response(503, f"grpc failed: status {exc.status}\n")
                return Action.PAUSE
        elif self.path.startswith("/enqueue"):
            SharedQueue.resolve(properties.plugin_vm_id(), "surface.events").enqueue(self.path)
        elif self.path == "/hostile":
            self.unknown = get_property(("no", "such", "property"))
            self.binary = self.request_headers.get("x-binary")
            log.info("surface: binary header %s", self.binary)  # not valid Unicode: must not crash
        elif self.path == "/shared":
            self.hits = int(update_shared_data("surface.hits", lambda old: str(int(old or b"0") + 1)))

    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.add("x-vm", VM_ID["value"])
        self.response_headers.add("x-greeting", os.environ.get("SURFACE_GREETING", "(unset)"))
        if getattr(self, "hits", None) is not None:
            self.response_headers.add("x-hits", str(self.hits))
        if self.path == "/rewrite":
            self.response_headers.remove("content-length")  # the body changes length
        if self.path == "/hostile":
            self.response_headers.add("x-unknown-property", repr(self.unknown))
            self.response_headers.add("x-binary-echo", self.binary or "")

    def on_response_body(self, body_size, end_of_stream):
        if self.path != "/rewrite":
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE  # let Envoy buffer the whole body
        body = self.response_body.read()
        self.response_body.replace(b"rewritten by python: " + body.upper())
        return Action.CONTINUE


class SurfaceRoot(RootContext):
    http_context = Surface

    def on_vm_start(self, vm_config):
        VM_ID["value"] = os.urandom(4).hex()
        return True

    def on_configure(self, plugin_config):
        self.queue = SharedQueue.register("surface.events")
        self.ticks = 0
        self.set_tick_period(100)
        return True

    def on_queue_ready(self, queue_id):
        while (message := self.queue.dequeue()) is not None:
            log.info("surface: queue got %s", message.decode())

    def on_tick(self):
        self.ticks += 1
        if self.ticks == 3:
            log.info("surface: tick %d in vm %s", self.ticks, VM_ID["value"])


register(SurfaceRoot)

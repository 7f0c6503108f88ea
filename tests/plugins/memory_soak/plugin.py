"""Hands the proxy every kind of hostcall argument, request after request, to show memory stays
flat. The kinds take turns (request n does kind n % 5), so that 200,000 requests stay fast in
the mock host while each kind runs 40,000 times:

0. reads a request header and adds and replaces others (header maps: bytes)
1. logs a line (text)
2. reads and writes properties (paths and values: bytes)
3. updates a counter in shared data with compare-and-swap, and a metric (keys, values)
4. awaits an HTTP call to cluster "svc" (cluster, headers, body) and uses its answer

Every response gets ``x-soak-answer`` (the call's answer, or "none").
"""

from pywasm_sdk import Counter, HttpContext, RootContext, get_property, log, register, set_property
from pywasm_sdk.shared import update_shared_data

_REQUESTS = Counter("soak.requests")


class Soak(HttpContext):
    answer = "none"

    async def on_request_headers(self, num_headers, end_of_stream):
        path = self.request_headers.get(":path") or "/0"
        kind = int(path.strip("/").split("/")[0]) % 5
        if kind == 0:
            user = self.request_headers.get("x-user") or "anonymous"
            self.request_headers.add("x-soak-user", user)
            self.request_headers.replace("x-soak-path", path)
        elif kind == 1:
            log.info("soak: %s", path)
        elif kind == 2:
            set_property("soak.path", path.encode())
            get_property(("request", "path"))
        elif kind == 3:
            update_shared_data("soak.count", lambda old: str(int(old or b"0") + 1).encode())
            _REQUESTS.increment()
        else:
            answer = await self.http_call("svc", path="/lookup", headers={"x-path": path})
            self.answer = answer.body.decode()

    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.add("x-soak-answer", self.answer)


register(RootContext, http=Soak)

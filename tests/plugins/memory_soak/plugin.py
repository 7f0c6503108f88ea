"""Touches every kind of hostcall argument on every request, to show memory stays flat.

Per request: reads request headers and a property, adds and replaces headers, logs a line,
writes a property, updates a counter in shared data with compare-and-swap, and records metrics;
every request whose path ends in "/call" awaits an HTTP call to cluster "svc" and copies its
answer into a response header.
"""

from pywasm_sdk import Counter, HttpContext, RootContext, get_property, log, register, set_property
from pywasm_sdk.shared import update_shared_data

_REQUESTS = Counter("soak.requests")


class Soak(HttpContext):
    async def on_request_headers(self, num_headers, end_of_stream):
        path = self.request_headers.get(":path") or ""
        user = self.request_headers.get("x-user") or "anonymous"
        get_property(("request", "path"))
        set_property("soak.user", user.encode())
        update_shared_data("soak.count", lambda old: str(int(old or b"0") + 1).encode())
        self.request_headers.add("x-soak-user", user)
        self.request_headers.replace("x-soak-path", path)
        _REQUESTS.increment()
        log.info("soak: %s for %s", path, user)
        if path.endswith("/call"):
            answer = await self.http_call("svc", path="/lookup", headers={"x-user": user})
            self.answer = answer.body.decode()
        else:
            self.answer = "none"

    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.add("x-soak-answer", self.answer)


register(RootContext, http=Soak)

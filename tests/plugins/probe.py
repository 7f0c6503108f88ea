"""A plugin that exercises the SDK's edges for end-to-end tests (not an example to copy).

Request paths select behaviour: /raise raises inside on_request_headers, /print prints,
/logging logs through the standard logging module; every response gets x-probe.
"""

import logging

from pywasm_sdk import HttpContext, log, register

logger = logging.getLogger("probe")


class Probe(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        path = self.request_headers.get(":path")
        if path == "/raise":
            explode(path)
        elif path == "/print":
            print("probe: hello from print()")
        elif path == "/logging":
            logger.warning("probe: hello from logging")
        log.info("probe: request %s", path)

    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.add("x-probe", "1")


def explode(path):
    raise RuntimeError(f"deliberate failure for {path}")


register(http=Probe)

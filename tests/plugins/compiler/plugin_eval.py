"""Calls eval() of a string in a callback: `pywasm build` sees the call and keeps CPython's
compiler in the module."""

from pywasm_sdk import HttpContext, register


class Stream(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        self.request_headers.add("x-eval", str(eval("6 * 7")))


register(http=Stream)

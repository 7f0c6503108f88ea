"""A plugin split over modules: `pywasm build` takes the folder and its helpers come along."""

from helpers import greeting

from pywasm_sdk import HttpContext, register


class Greet(HttpContext):
    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.add("x-greeting", greeting())


register(http=Greet)

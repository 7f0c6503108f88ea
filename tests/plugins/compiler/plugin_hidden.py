"""Reaches compile(), exec() and eval() of a string where the build cannot see it (through
getattr), so the module is built without CPython's compiler: each raises ImportError, which the
plugin catches and reports in a request header."""

import builtins

from pywasm_sdk import HttpContext, register


class Stream(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        results = []
        for name, args in (("compile", ("1", "<s>", "eval")), ("exec", ("x = 1",)), ("eval", ("1",))):
            try:
                getattr(builtins, name)(*args)
                results.append(f"{name}:ok")
            except ImportError as exc:
                results.append(f"{name}:ImportError:{'--keep-compiler' in str(exc)}")
        self.request_headers.add("x-compiler", ",".join(results))


register(http=Stream)

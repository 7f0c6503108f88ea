"""An auth-style plugin whose VM can be killed on purpose, for the failure-policy tests.

Not an example to copy as a whole, but its ``on_request_headers`` is the pattern an auth
plugin should follow: any failure while deciding denies.

- A request passes only with ``x-token: letmein`` (the upstream sees ``x-auth: ok``); any
  other request is answered 403 by the plugin. Every answer carries ``x-vm``, a random id
  drawn when this VM started, so a test can tell a reloaded VM from the first one.
- ``/crash`` kills the VM: ``os.abort()`` traps, as a fatal error below Python would.
- ``/hoard`` allocates until the VM's memory (1 GiB in Envoy) is exhausted, logs how much it
  got, lets it go and then decides as usual: Python raises MemoryError at the cap, which the
  plugin catches like any exception; the VM lives on.
"""

import os
import random

from pywasm_sdk import Action, HttpContext, RootContext, log, register

TOKEN = "letmein"
_hoard = []


def hoard_until_exhausted() -> int:
    """Allocate (smaller and smaller blocks) until not even a small one is left; the bytes got."""
    size, total = 1 << 24, 0
    while size >= 64:
        try:
            _hoard.append(bytearray(size))
            total += size
        except MemoryError:
            size //= 2
    _hoard.clear()
    return total


class Auth(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        path = self.request_headers.get(":path") or "/"
        if path == "/crash":
            log.warning("crash: killing this VM on purpose")
            os.abort()
        try:
            if path == "/hoard":
                log.info("crash: hoarded %d MiB before MemoryError", hoard_until_exhausted() >> 20)
            allowed = self.request_headers.get("x-token") == TOKEN
        except Exception:  # noqa: BLE001 - an auth filter that cannot decide denies
            _hoard.clear()
            allowed = False
            log.error("crash: could not decide %s: denied", path)
        if not allowed:
            self.send_local_response(403, "denied\n", headers={"x-vm": self.root.vm_tag})
            return Action.PAUSE
        self.request_headers.replace("x-auth", "ok")

    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.replace("x-vm", self.root.vm_tag)


class AuthRoot(RootContext):
    http_context = Auth
    vm_tag = ""

    def on_vm_start(self, vm_config):
        self.vm_tag = f"{random.getrandbits(32):08x}"
        log.info("crash: VM %s started", self.vm_tag)
        return True


register(AuthRoot)

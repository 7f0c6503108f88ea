"""Helpers shared by the tests of the ``pywasm`` commands (this module holds no tests).

Most command tests need *a* module, not a Python plugin: a hand-written proxy-wasm module of a
few hundred bytes has the same interface shape as a built plugin (ABI marker, memory, allocator,
callbacks, ``env.proxy_*`` imports), is made in microseconds, and Envoy loads it in
milliseconds. Tests that need a real plugin use the session fixture ``pywasm_build``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import wasmtime

from .conftest import REPO

_COMMON = """
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
"""
_CONFIGURE_OK = '(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))'
_CONFIGURE_FAILS = '(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))'
_HTTP = '(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))'
_TCP = """(func (export "proxy_on_new_connection") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32) (i32.const 0))"""

#: WAT of small modules, by what they are
WAT = {
    "http": f"(module {_COMMON} {_HTTP})",
    "tcp": f"(module {_COMMON} {_TCP})",
    "both": f"(module {_COMMON} {_HTTP} {_TCP})",
    "root_only": f"(module {_COMMON})",
    # on_configure answers false: Envoy rejects the configuration
    "rejects": f"(module {_COMMON.replace(_CONFIGURE_OK, _CONFIGURE_FAILS)} {_HTTP})",
    # what Envoy refuses: an import it does not provide, a hostcall with the wrong type, no allocator
    "bad": """(module
      (import "env" "not_a_hostcall" (func (param i32) (result i32)))
      (import "env" "proxy_log" (func (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1")))""",
}


def module_bytes(kind: str) -> bytes:
    return wasmtime.wat2wasm(WAT[kind])


def write_module(directory: Path, kind: str, name: str | None = None) -> Path:
    """``directory/<name or kind>.wasm`` holding the module ``kind`` of :data:`WAT`."""
    path = directory / f"{name or kind}.wasm"
    path.write_bytes(module_bytes(kind))
    return path


def component_bytes() -> bytes:
    """The smallest WebAssembly component: the preamble of a component, no sections."""
    return b"\0asm\x0d\x00\x01\x00"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for ``python -m pywasm_sdk.tooling.cli`` in a child: this checkout first."""
    path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)
    env.pop("CI", None)  # progress lines on: some tests read them
    return env


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "pywasm_sdk.tooling.cli", *map(str, args)]


def run_cli(*args: str | os.PathLike[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``pywasm ARGS`` in a child process (as a user would) and capture its output."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**env), stdin=subprocess.DEVNULL)


class RunningCli:
    """``pywasm ARGS`` in the background (e.g. ``pywasm run``): its output lines as they arrive.

    Lines are read by two threads into lists, so a test waits for a line with a timeout and
    never blocks on a pipe. ``stop()`` sends a signal to the process (by its pid) and reaps it.
    """

    def __init__(self, *args: str | os.PathLike[str], **env: str) -> None:
        self.proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=cli_env(**env))
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, stream: str = "stdout", timeout: float = 180) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern`` (a regex), waiting up to ``timeout`` s."""
        lines = self.stdout if stream == "stdout" else self.stderr
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in list(lines):
                if m := rx.search(line):
                    return m
            if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                raise AssertionError(f"pywasm exited ({self.proc.returncode}) before printing {pattern!r}:\n"
                                     + "\n".join(self.stdout + self.stderr))
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n"
                                     + "\n".join(self.stdout + self.stderr))
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(5)
        return status


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found

"""The WASI preview-1 functions Envoy gives a plugin, answered the way Envoy answers them.

Only the functions of ``wasi_preview1_allowed`` in abi/proxy_wasm.yaml exist (the set every Envoy
since the 1.2x releases provides); a module importing any other fails to load in those proxies,
and fails to load here. Behaviour (proxy-wasm-cpp-host ``src/exports.cc``):

    fd_write               fd 1 -> log at INFO, fd 2 -> log at ERROR (one trailing newline
                           dropped); other fds EBADF
    fd_read                ENOSYS            fd_seek, fd_close     success, nothing done
    fd_fdstat_get          fd 1 and 2: rights FD_WRITE; others EBADF
    environ_get/_sizes_get the VM's environment variables (``env=`` of the host)
    args_get/_sizes_get    no arguments
    clock_time_get         REALTIME and MONOTONIC from the host's clock (tests control it);
                           others ENOTSUP
    random_get             random bytes, at most 64 KiB per call (EINVAL beyond)
    proc_exit              returns (Envoy only logs it; the module usually traps right after)
    path_open              ENOENT            fd_prestat_get        EBADF (no preopened dirs)
    fd_prestat_dir_name    ENOSYS

A memory access out of bounds answers EFAULT, as Envoy does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .._abi import RANDOM_GET_MAX_BYTES, LogLevel
from ..wire import to_str
from ._memory import GuestMemory
from .host import HostState

__all__ = ["MODULE", "Wasi"]

MODULE = "wasi_snapshot_preview1"

SUCCESS, BADF, FAULT, INVAL, NOENT, NOSYS, NOTSUP = 0, 8, 21, 28, 44, 52, 58
_RIGHTS_FD_WRITE = 64


class Wasi:
    """WASI for one instance: ``functions[name](*raw_args)`` -> errno (None for proc_exit)."""

    def __init__(self, host: HostState, memory: Callable[[], GuestMemory]) -> None:
        self._host = host
        self._memory = memory
        self.functions: dict[str, Callable[..., int | None]] = {
            "fd_write": self.fd_write,
            "fd_read": lambda fd, iovs, iovs_len, nread: NOSYS,
            "fd_seek": lambda fd, offset, whence, newoffset: SUCCESS,
            "fd_close": lambda fd: SUCCESS,
            "fd_fdstat_get": self.fd_fdstat_get,
            "environ_get": self.environ_get,
            "environ_sizes_get": self.environ_sizes_get,
            "args_get": lambda argv, argv_buf: SUCCESS,
            "args_sizes_get": self.args_sizes_get,
            "clock_time_get": self.clock_time_get,
            "random_get": self.random_get,
            "proc_exit": self.proc_exit,
            "path_open": lambda *args: NOENT,
            "fd_prestat_get": lambda fd, buf: BADF,
            "fd_prestat_dir_name": lambda fd, path, path_len: NOSYS,
        }

    def fd_write(self, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
        if fd not in (1, 2):
            return BADF
        memory = self._memory()
        chunks = []
        for i in range(iovs_len):
            buf, length = memory.read_u32(iovs + 8 * i), memory.read_u32(iovs + 8 * i + 4)
            if buf is None or length is None:
                return FAULT
            data = memory.read(buf, length)
            if data is None:
                return FAULT
            chunks.append(data)
        text = b"".join(chunks)
        if text:
            line = text[:-1] if text.endswith(b"\n") else text
            self._host.record_log(LogLevel.INFO if fd == 1 else LogLevel.ERROR, to_str(line),
                                  "stdout" if fd == 1 else "stderr")
        return SUCCESS if memory.write_u32(nwritten_ptr, len(text)) else FAULT

    def fd_fdstat_get(self, fd: int, stat_ptr: int) -> int:
        if fd not in (1, 2):
            return BADF
        stat = bytes(8) + _RIGHTS_FD_WRITE.to_bytes(8, "little") + bytes(8)
        return SUCCESS if self._memory().write(stat_ptr, stat) else FAULT

    def _environ(self) -> list[bytes]:
        return [f"{k}={v}".encode() + b"\0" for k, v in self._host.config.env.items()]

    def environ_get(self, environ_ptr: int, buf_ptr: int) -> int:
        memory = self._memory()
        for entry in self._environ():
            if not (memory.write_u32(environ_ptr, buf_ptr) and memory.write(buf_ptr, entry)):
                return FAULT
            environ_ptr += 4
            buf_ptr += len(entry)
        return SUCCESS

    def environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        memory = self._memory()
        entries = self._environ()
        ok = memory.write_u32(count_ptr, len(entries)) and memory.write_u32(size_ptr, sum(map(len, entries)))
        return SUCCESS if ok else FAULT

    def args_sizes_get(self, argc_ptr: int, size_ptr: int) -> int:
        memory = self._memory()
        return SUCCESS if memory.write_u32(argc_ptr, 0) and memory.write_u32(size_ptr, 0) else FAULT

    def clock_time_get(self, clock_id: int, _precision: int, time_ptr: int) -> int:
        if clock_id == 0:
            now = self._host.now_ns
        elif clock_id == 1:
            now = self._host.monotonic_ns
        else:
            return NOTSUP
        return SUCCESS if self._memory().write_u64(time_ptr, now) else FAULT

    def random_get(self, buf_ptr: int, length: int) -> int:
        if length > RANDOM_GET_MAX_BYTES:
            return INVAL
        if length == 0:
            return SUCCESS
        return SUCCESS if self._memory().write(buf_ptr, os.urandom(length)) else FAULT

    def proc_exit(self, code: int) -> None:
        self._host.note(f"the plugin called WASI proc_exit({code}); Envoy only logs it and returns")

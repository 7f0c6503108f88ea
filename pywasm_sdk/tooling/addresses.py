"""Ports and upstream addresses given on the command line, checked before anything starts.

The house rule for everything the tooling starts or configures for a local run: IPv4 loopback
only. Checking here, with the option's name in the message, turns what would be a failed
Envoy start 20 seconds later (after a build and a V8 compile) into an immediate, clear error.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

__all__ = ["AddressError", "check_port", "ensure_port_free", "parse_upstream"]


class AddressError(ValueError):
    """A port or address option is unusable; the message names the option."""


def check_port(port: int, option: str = "--port") -> int:
    if not 1 <= port <= 65535:
        raise AddressError(f"{option} {port}: a port is a number from 1 to 65535")
    return port


def parse_upstream(text: str, option: str = "--upstream") -> tuple[str, int]:
    """``HOST:PORT`` on loopback (``localhost`` means 127.0.0.1) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AddressError(f"{option} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise AddressError(f"{option} {text!r}: only IPv4 loopback addresses (127.0.0.0/8) or "
                           "localhost: everything pywasm configures stays on this machine")
    return host, check_port(int(port), option)


def ensure_port_free(port: int, option: str = "--port", host: str = "127.0.0.1") -> None:
    """Fail now, naming the option, if nothing could listen on ``host:port``."""
    check_port(port, option)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Envoy does: so that a port whose last connections are in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressError(f"{option} {port}: {host}:{port} is already in use (another "
                                   f"`pywasm run`?); choose another port with {option}") from None
            if exc.errno == errno.EACCES:
                raise AddressError(f"{option} {port}: not allowed to listen on {host}:{port} (ports "
                                   f"below 1024 need privileges); choose another with {option}") from None
            raise AddressError(f"{option} {port}: cannot listen on {host}:{port}: {exc.strerror}") from None

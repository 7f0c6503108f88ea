"""The services examples/egress_tunnel/envoy.yaml talks to, for a local run (and for its tests).

    python examples/egress_tunnel/services.py     # Ctrl-C (or SIGTERM) stops them

- two HTTP CONNECT proxies, ``proxy-a`` on 127.0.0.1:3128 and ``proxy-b`` on 127.0.0.1:3129,
  which tunnel to the three destinations below and refuse anything else (403);
- the destinations 127.0.0.10:10000, 127.0.0.11:10000 and 127.0.0.12:10000 as the proxies see
  them: servers that greet with their name and echo what they receive. Envoy's listener has
  those addresses on this machine, so the servers listen on free ports and the proxies map the
  names to them (the far side of a proxy is another network);
- the server of direct connections on 127.0.0.1:10020, which greets and echoes too.

It prints each CONNECT a proxy receives, and the answer it gave.
"""

from __future__ import annotations

import argparse

from pywasm_sdk.tooling.envoy import ConnectProxy, TcpServer, Tunnel, wait_for_interrupt

LISTEN_PORT, DIRECT_PORT = 10000, 10020
PROXY_PORTS = {"proxy-a": 3128, "proxy-b": 3129}
DESTINATIONS = ("127.0.0.10", "127.0.0.11", "127.0.0.12")


class Services:
    """The proxies, the destinations behind them and the direct server (not started)."""

    def __init__(self, *, listen_port: int = LISTEN_PORT, proxy_ports: dict[str, int] | None = None,
                 direct_port: int = DIRECT_PORT, on_tunnel=None) -> None:
        self._servers: list[TcpServer | ConnectProxy] = []
        try:  # each server binds its port when created: release the earlier ones if one cannot
            self.destinations = {
                f"{ip}:{listen_port}": self._add(TcpServer(banner=f"hello from {ip}:{listen_port}\n".encode()))
                for ip in DESTINATIONS}
            routes = {authority: server.address for authority, server in self.destinations.items()}
            self.proxies = {
                name: self._add(ConnectProxy(routes, port=port, on_tunnel=on_tunnel and (
                    lambda tunnel, name=name: on_tunnel(name, tunnel))))
                for name, port in (proxy_ports or PROXY_PORTS).items()}
            self.direct = self._add(TcpServer(banner=b"hello from the direct route (no proxy)\n", port=direct_port))
        except BaseException:
            self.stop()
            raise

    def _add(self, server):
        self._servers.append(server)
        return server

    def start(self) -> Services:
        for server in self._servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()

    def __enter__(self) -> Services:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def report(name: str, tunnel: Tunnel) -> None:
    print(f"{name}: {tunnel.request_line} from {tunnel.peer[0]}:{tunnel.peer[1]} -> {tunnel.status}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, default=LISTEN_PORT, help="the port of the destinations")
    for name, port in PROXY_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port)
    parser.add_argument("--direct-port", type=int, default=DIRECT_PORT)
    args = parser.parse_args()
    ports = {name: getattr(args, f"{name.replace('-', '_')}_port") for name in PROXY_PORTS}
    with Services(listen_port=args.listen_port, proxy_ports=ports, direct_port=args.direct_port,
                  on_tunnel=report) as services:
        proxies = ", ".join(f"{name} on 127.0.0.1:{proxy.port}" for name, proxy in services.proxies.items())
        print(f"CONNECT proxies {proxies}; destinations {', '.join(services.destinations)} behind them; "
              f"direct route on 127.0.0.1:{services.direct.port}; Ctrl-C stops them", flush=True)
        wait_for_interrupt()


if __name__ == "__main__":
    main()

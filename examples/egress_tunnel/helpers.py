"""The services examples/egress_tunnel/envoy.yaml expects, all on loopback:

- two HTTP CONNECT proxies, ``proxy-a`` on 127.0.0.1:3128 and ``proxy-b`` on 127.0.0.1:3129,
  which tunnel to the three destinations below and refuse anything else (403);
- the destinations 127.0.0.10:10000, 127.0.0.11:10000 and 127.0.0.12:10000 as the proxies see
  them (servers that greet with their name and echo what they receive). Envoy's listener has
  those addresses on this machine, so the servers really listen on free ports and the proxies
  map the names to them: the far side of a proxy is another network;
- the server of direct connections on 127.0.0.1:10020.

    python examples/egress_tunnel/helpers.py      # Ctrl-C stops them

It prints each CONNECT a proxy receives. The tests start the same services on free ports.
"""

from __future__ import annotations

import sys
import time

from pywasm_sdk.tooling.envoy import ConnectProxy, TcpServer

DESTINATIONS = ("127.0.0.10", "127.0.0.11", "127.0.0.12")


class Helpers:
    """The running services; ``stop()`` stops them all."""

    def __init__(self, *, listen_port: int = 10000, proxy_ports: dict[str, int] | None = None,
                 direct_port: int = 10020) -> None:
        self._servers: list[TcpServer | ConnectProxy] = []
        try:  # each server binds its port when created: release the earlier ones if one cannot
            self.destinations = {
                f"{ip}:{listen_port}": self._add(TcpServer(banner=f"hello from {ip}:{listen_port}\n".encode()))
                for ip in DESTINATIONS}
            routes = {authority: server.address for authority, server in self.destinations.items()}
            ports = proxy_ports or {"proxy-a": 3128, "proxy-b": 3129}
            self.proxies = {name: self._add(ConnectProxy(routes, port=port)) for name, port in ports.items()}
            self.direct = self._add(TcpServer(banner=b"hello from the direct route (no proxy)\n", port=direct_port))
        except BaseException:
            self.stop()
            raise

    def _add(self, server):
        self._servers.append(server)
        return server

    def start(self) -> Helpers:
        for server in self._servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


def main() -> int:
    try:
        helpers = Helpers().start()
    except OSError as exc:
        print(f"helpers: {exc} (is another copy running?)", file=sys.stderr)
        return 1
    try:
        for name, proxy in helpers.proxies.items():
            print(f"{name}: CONNECT proxy on {proxy.address[0]}:{proxy.address[1]}")
        print(f"direct: {helpers.direct.address[0]}:{helpers.direct.address[1]}")
        print("waiting for CONNECT requests (Ctrl-C stops)", flush=True)
        seen = {name: 0 for name in helpers.proxies}
        while True:
            time.sleep(0.2)
            for name, proxy in helpers.proxies.items():
                for tunnel in proxy.tunnels[seen[name]:]:
                    print(f"{name}: {tunnel.request_line} from {tunnel.peer[0]}:{tunnel.peer[1]} -> {tunnel.status}",
                          flush=True)
                seen[name] = len(proxy.tunnels)
    except KeyboardInterrupt:
        return 0
    finally:
        helpers.stop()


if __name__ == "__main__":
    sys.exit(main())

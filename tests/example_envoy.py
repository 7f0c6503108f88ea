"""An example's envoy.yaml, made runnable by a test: the same configuration on free ports.

The examples ship Envoy configurations on fixed ports (10000, 9901, ...) for a person to run;
tests run that very file with each port moved to a free one (the same port always to the same
new port, so listeners and the clusters that point at them still agree) and every wasm filter
loading the module the test built, through the function ``pywasm run --envoy-config`` uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.run import bootstrap_from_file, load_envoy_config, wasm_filters


class PortMap(dict[int, int]):
    """Example port -> the free port a test uses instead (allocated on first use)."""

    def __missing__(self, port: int) -> int:
        self[port] = E.free_port()
        return self[port]


def _move_ports(node: Any, ports: PortMap) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "port_value":
                node[key] = ports[int(value)]
            else:
                _move_ports(value, ports)
    elif isinstance(node, list):
        for item in node:
            _move_ports(item, ports)


def example_bootstrap(path: Path, wasm: Path) -> tuple[dict[str, Any], PortMap]:
    """The bootstrap at ``path`` on free ports, loading ``wasm``; and the port map used."""
    ports = PortMap()
    config = bootstrap_from_file(load_envoy_config(path), wasm, None)
    _move_ports(config, ports)
    return config, ports


def plugin_configs(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    """The PluginConfig of every wasm filter, in document order (to read or change)."""
    return [f["typed_config"]["config"] for f in wasm_filters(bootstrap)]


def plugin_json(plugin: dict[str, Any]) -> Any:
    """A wasm filter's configuration, parsed as the JSON it is in the examples."""
    return json.loads(plugin["configuration"]["value"])


def set_plugin_json(plugin: dict[str, Any], value: Any) -> None:
    plugin["configuration"] = E.any_value(json.dumps(value))

"""The Istio manifests shipped with examples/rate_limit and examples/egress_tunnel.

Each ``istio/wasmplugin.yaml`` is what the ``pywasm manifests`` command in its header prints for
the built module (run here, compared document by document), its ``pluginConfig`` is a
configuration the plugin accepts, and egress_tunnel's ``istio/tunnels.yaml`` (the part a
WasmPlugin cannot express: the proxies' clusters and tcp_proxy's tunneling_config) is the
tunnelling the real-Envoy test runs, in a form Envoy accepts.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from pywasm_sdk.testing import MockHost
from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.run import load_envoy_config

from .conftest import EXAMPLES
from .test_examples_helpers import reproduce_manifest

TCP_PROXY = "envoy.filters.network.tcp_proxy"


@pytest.mark.parametrize("name", ["rate_limit", "egress_tunnel"])
def test_the_wasmplugin_is_what_pywasm_manifests_prints(name, pywasm_build):
    example = EXAMPLES / name
    shipped, made = reproduce_manifest(example / "istio" / "wasmplugin.yaml", pywasm_build(example))
    assert shipped == made
    (plugin,) = shipped
    assert plugin["kind"] == "WasmPlugin"
    assert plugin["spec"]["type"] == ("HTTP" if name == "rate_limit" else "NETWORK")


@pytest.mark.parametrize("name", ["rate_limit", "egress_tunnel"])
def test_the_plugin_accepts_the_wasmplugin_configuration(name):
    plugin = yaml.safe_load((EXAMPLES / name / "istio" / "wasmplugin.yaml").read_text())
    with MockHost.from_plugin(EXAMPLES / name, plugin_config=json.dumps(plugin["spec"]["pluginConfig"])) as host:
        assert host.configured, host.logs.text()


def tunnels() -> dict:
    return yaml.safe_load((EXAMPLES / "egress_tunnel" / "istio" / "tunnels.yaml").read_text())


def test_tunnels_apply_to_the_workloads_of_the_plugin_and_name_its_clusters():
    envoy_filter = tunnels()
    plugin = yaml.safe_load((EXAMPLES / "egress_tunnel" / "istio" / "wasmplugin.yaml").read_text())
    assert envoy_filter["kind"] == "EnvoyFilter"
    # tunnelling without the plugin would send every connection of those pods to a "proxy"
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == plugin["spec"]["selector"]["matchLabels"]
    assert envoy_filter["metadata"]["namespace"] == plugin["metadata"]["namespace"]
    clusters = {p["patch"]["value"]["name"] for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "CLUSTER"}
    config = plugin["spec"]["pluginConfig"]
    named = {route["tunnel"] for route in [*config["routes"], config.get("default", {})] if "tunnel" in route}
    assert named and named <= clusters


def test_tunnels_are_the_tunnelling_the_envoy_test_runs():
    (merge,) = [p for p in tunnels()["spec"]["configPatches"] if p["applyTo"] == "NETWORK_FILTER"]
    assert merge["match"] == {"context": "SIDECAR_OUTBOUND", "listener": {"filterChain": {"filter": {"name": TCP_PROXY}}}}
    assert merge["patch"]["operation"] == "MERGE"
    local = load_envoy_config(EXAMPLES / "egress_tunnel" / "envoy.yaml")
    (tcp_proxy,) = [f for f in local["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
                    if f["name"] == TCP_PROXY]
    value = merge["patch"]["value"]
    assert value["name"] == TCP_PROXY
    assert value["typed_config"]["@type"] == tcp_proxy["typed_config"]["@type"]
    assert value["typed_config"]["tunneling_config"] == tcp_proxy["typed_config"]["tunneling_config"]


@pytest.mark.envoy  # envoy --mode validate, without the plugin (nothing to compile: fast)
def test_envoy_accepts_the_tunnel_clusters_and_the_merged_tcp_proxy():
    patches = tunnels()["spec"]["configPatches"]
    clusters = []
    for patch in patches:
        if patch["applyTo"] != "CLUSTER":
            continue
        assert patch["match"]["context"] == "SIDECAR_OUTBOUND" and patch["patch"]["operation"] == "ADD"
        cluster = copy.deepcopy(patch["patch"]["value"])
        # the proxies' real names resolve only in the cluster's network: point them at loopback
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"]["socket_address"]["address"] = "127.0.0.1"
        clusters.append(cluster)
    (merge,) = [p for p in patches if p["applyTo"] == "NETWORK_FILTER"]
    tcp_proxy = {"name": TCP_PROXY, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "outbound", "cluster": "PassthroughCluster",  # what Istio generates
        **{k: v for k, v in merge["patch"]["value"]["typed_config"].items() if k != "@type"}}}
    passthrough = {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                   "connect_timeout": "1s"}
    E.validate_config({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": E.free_port()}}},
        "static_resources": {
            "listeners": [{"name": "outbound", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": E.free_port()}}, "filter_chains": [{"filters": [tcp_proxy]}]}],
            "clusters": [passthrough, *clusters]}})

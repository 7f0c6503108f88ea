"""`pywasm manifests`: every document parses; Envoy itself validates what it will load."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import zlib

import pytest
import yaml

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling import oci
from pywasm_sdk.tooling.cli import main

from .conftest import EXAMPLES
from .test_cli_helpers import write_module

WASMPLUGIN_FIELDS = {"selector", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret",
                     "pluginConfig", "pluginName", "phase", "priority", "failStrategy", "vmConfig",
                     "match", "type"}


def manifests(capsys, *argv: str) -> tuple[list[dict], str]:
    """Run ``pywasm manifests ARGV``; returns the parsed documents and the raw YAML."""
    assert main(["manifests", *argv]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    return [doc for doc in yaml.safe_load_all(text)], text


def by_kind(documents: list[dict]) -> dict[str, dict]:
    out = {}
    for doc in documents:
        out["envoy" if "static_resources" in doc else doc["kind"]] = doc
    return out


def wasm_filter(bootstrap: dict) -> dict:
    chain = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    if chain[0]["name"] == "envoy.filters.network.wasm":
        return chain[0]
    return chain[0]["typed_config"]["http_filters"][0]


def validate_with_filter(module, kind: str, filter_entry: dict) -> None:
    """Envoy validates a bootstrap whose wasm filter is ``filter_entry`` (module read from ``module``)."""
    entry = copy.deepcopy(filter_entry)
    entry["typed_config"]["config"]["vm_config"]["code"] = {"local": {"filename": str(module)}}
    builder = E.http_bootstrap if kind == "http" else E.tcp_bootstrap
    extra = ({"upstream": ("127.0.0.1", 1)} if kind == "http"
             else {"clusters": {"upstream": ("127.0.0.1", 1)}, "default_cluster": "upstream"})
    config = builder(wasm_path=module, listener_port=E.free_port(), admin_port=E.free_port(), **extra)
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    if kind == "http":
        chain[0]["typed_config"]["http_filters"][0] = entry
    else:
        chain[0] = entry
    E.validate_config(config)


def test_default_output_has_the_three_documents_with_comments(tmp_path, capsys):
    module = write_module(tmp_path, "http", "my_plugin")
    documents, text = manifests(capsys, str(module))
    docs = by_kind(documents)
    assert set(docs) == {"envoy", "EnvoyFilter", "WasmPlugin"}
    assert text.startswith("# Envoy bootstrap: HTTP listener 127.0.0.1:10000 -> my_plugin -> 127.0.0.1:8080")
    assert "\n---\n# Istio EnvoyFilter (HTTP)" in text and "\n---\n# Istio WasmPlugin (HTTP)" in text
    for kind in ("EnvoyFilter", "WasmPlugin"):
        assert docs[kind]["metadata"] == {"name": "my-plugin"}


@pytest.mark.envoy  # envoy --mode validate
@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_envoy_config_is_valid_for_envoy(kind, tmp_path, capsys):
    module = write_module(tmp_path, kind)
    out = tmp_path / "envoy.yaml"
    assert main(["manifests", str(module), "--kind", "envoy", "-o", str(out), "--listen-port", "18000",
                 "--admin-port", "18001", "--upstream", "localhost:3000", "--config", "hello",
                 "--env", "A=1", "--env", "HOME", "--fail-strategy", "reload", "--reload-backoff", "0.25"]) == 0
    E.validate_config(out)  # the very file, comments included
    (config,) = yaml.safe_load_all(out.read_text())
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18000}
    assert config["admin"]["address"]["socket_address"]["port_value"] == 18001
    cluster = config["static_resources"]["clusters"][0]
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"socket_address": {"address": "127.0.0.1", "port_value": 3000}}
    entry = wasm_filter(config)
    expected = "envoy.filters.http.wasm" if kind == "http" else "envoy.filters.network.wasm"
    assert entry["name"] == expected
    plugin = entry["typed_config"]["config"]
    assert plugin["configuration"]["value"] == "hello"
    assert plugin["failure_policy"] == "FAIL_RELOAD"
    assert plugin["reload_config"] == {"backoff": {"base_interval": "0.25s"}}
    assert plugin["vm_config"]["code"] == {"local": {"filename": str(module.resolve())}}
    assert plugin["vm_config"]["environment_variables"] == {"key_values": {"A": "1"}, "host_env_keys": ["HOME"]}
    if kind == "tcp":
        assert listener["filter_chains"][0]["filters"][1]["name"] == "envoy.filters.network.tcp_proxy"


@pytest.mark.envoy  # envoy --mode validate
def test_validate_option_reports_a_rejected_configuration(tmp_path, capsys):
    module = write_module(tmp_path, "rejects")
    assert main(["manifests", str(module), "--kind", "envoy", "--validate"]) == 1
    err = capsys.readouterr().err
    assert err.count("pywasm manifests: error: envoy rejected the config") == 1
    assert "Traceback" not in err
    assert main(["manifests", str(write_module(tmp_path, "http")), "--kind", "envoy", "--validate"]) == 0


@pytest.mark.envoy  # envoy --mode validate
def test_validated_real_plugin_with_its_configuration(pywasm_build, tmp_path, capsys):
    """A built plugin: V8 compiles it and its on_configure accepts (then rejects) the config."""
    wasm = pywasm_build(EXAMPLES / "http_headers")
    out = tmp_path / "envoy.yaml"
    assert main(["manifests", str(wasm), "--kind", "envoy", "--config", "x-a=1", "--validate",
                 "-o", str(out)]) == 0
    assert wasm_filter(yaml.safe_load(out.read_text()))["typed_config"]["config"]["configuration"]["value"] == "x-a=1"
    assert main(["manifests", str(wasm), "--kind", "envoy", "--config", "no equals sign", "--validate"]) == 1
    assert "configuration rejected" in capsys.readouterr().err


@pytest.mark.envoy  # envoy --mode validate
def test_envoyfilter_with_a_local_module(tmp_path, capsys):
    module = write_module(tmp_path, "http", "hdr")
    documents, text = manifests(capsys, str(module), "--kind", "envoyfilter", "--selector", "app=web",
                                "--namespace", "shop", "--config", "x=1", "--path", "/var/wasm/hdr.wasm")
    (ef,) = documents
    assert ef["apiVersion"] == "networking.istio.io/v1alpha3" and ef["kind"] == "EnvoyFilter"
    assert ef["metadata"] == {"name": "hdr", "namespace": "shop"}
    assert ef["spec"]["workloadSelector"] == {"labels": {"app": "web"}}
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"] == {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {
        "name": "envoy.filters.network.http_connection_manager",
        "subFilter": {"name": "envoy.filters.http.router"}}}}}
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.wasm"
    vm = value["typed_config"]["config"]["vm_config"]
    assert vm["code"] == {"local": {"filename": "/var/wasm/hdr.wasm"}}
    assert "/var/wasm/hdr.wasm in the istio-proxy container" in text
    validate_with_filter(module, "http", value)  # the inserted filter is one Envoy accepts


@pytest.mark.envoy  # envoy --mode validate
def test_network_envoyfilter_goes_before_tcp_proxy(tmp_path, capsys):
    module = write_module(tmp_path, "tcp")
    (ef,), _ = manifests(capsys, str(module), "--kind", "envoyfilter")
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "NETWORK_FILTER"
    assert patch["match"] == {"context": "SIDECAR_OUTBOUND", "listener": {"filterChain": {"filter": {
        "name": "envoy.filters.network.tcp_proxy"}}}}
    assert patch["patch"]["value"]["name"] == "envoy.filters.network.wasm"
    assert patch["patch"]["value"]["typed_config"]["@type"] == \
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
    validate_with_filter(module, "tcp", patch["patch"]["value"])


@pytest.mark.envoy  # envoy --mode validate
@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_envoyfilter_with_a_remote_module_uses_ecds(kind, tmp_path, capsys):
    module = write_module(tmp_path, kind, "remote_one")
    (ef,), text = manifests(capsys, str(module), "--kind", "envoyfilter", "--url",
                            "https://files.example.com:8443/wasm/remote_one.wasm", "--context", "GATEWAY")
    extension, insert = ef["spec"]["configPatches"]
    assert extension["applyTo"] == "EXTENSION_CONFIG" and extension["patch"]["operation"] == "ADD"
    name = extension["patch"]["value"]["name"]
    assert name == "pywasm.remote_one"
    remote = extension["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"]
    assert remote["sha256"] == hashlib.sha256(module.read_bytes()).hexdigest()
    assert remote["http_uri"] == {"uri": "https://files.example.com:8443/wasm/remote_one.wasm",
                                  "cluster": "outbound|8443||files.example.com", "timeout": "30s"}
    filter_kind = "http" if kind == "http" else "network"
    assert insert["applyTo"] == ("HTTP_FILTER" if kind == "http" else "NETWORK_FILTER")
    assert insert["match"]["context"] == "GATEWAY"
    assert insert["patch"]["value"] == {"name": name, "config_discovery": {
        "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
        "type_urls": [f"type.googleapis.com/envoy.extensions.filters.{filter_kind}.wasm.v3.Wasm"]}}
    assert "the istio-agent downloads https://files.example.com:8443/wasm/remote_one.wasm" in text
    # what the agent hands Envoy after the download is the same config with a local file
    validate_with_filter(module, kind, extension["patch"]["value"])


def test_wasmplugin_with_every_field(tmp_path, capsys):
    module = write_module(tmp_path, "http", "auth")
    config = {"header": "x-a", "limits": {"rps": 5}, "names": ["a", "b"]}
    (wp,), text = manifests(
        capsys, str(module), "--kind", "wasmplugin", "--url", "oci://reg.example.com/wasm/auth:0.1.0",
        "--config", json.dumps(config), "--phase", "AUTHN", "--priority", "10", "--fail-strategy", "open",
        "--env", "MODE=strict", "--env", "POD_NAME", "--selector", "app=web", "--selector", "tier=front",
        "--root-id", "auth_root", "--pull-policy", "Always", "--namespace", "shop")
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1" and wp["kind"] == "WasmPlugin"
    assert wp["metadata"] == {"name": "auth", "namespace": "shop"}
    spec = wp["spec"]
    assert set(spec) <= WASMPLUGIN_FIELDS
    assert spec == {
        "selector": {"matchLabels": {"app": "web", "tier": "front"}},
        "url": "oci://reg.example.com/wasm/auth:0.1.0",
        "sha256": oci.build_image(module.read_bytes()).manifest_digest.removeprefix("sha256:"),
        "imagePullPolicy": "Always",
        "type": "HTTP",
        "phase": "AUTHN",
        "priority": 10,
        "failStrategy": "FAIL_OPEN",
        "pluginName": "auth_root",
        "match": [{"mode": "SERVER"}],
        "pluginConfig": config,
        "vmConfig": {"env": [{"name": "MODE", "value": "strict"}, {"name": "POD_NAME", "valueFrom": "HOST"}]},
    }
    assert "manifest digest of the image `pywasm oci` builds" in text


def test_wasmplugin_sha256_matches_what_pywasm_oci_prints(tmp_path, capsys):
    module = write_module(tmp_path, "tcp")
    assert main(["oci", str(module), "-o", str(tmp_path / "image.tar")]) == 0
    printed = next(line.split()[-1] for line in capsys.readouterr().out.splitlines()
                   if "WasmPlugin sha256:" in line)
    (wp,), _ = manifests(capsys, str(module), "--kind", "wasmplugin", "--url", "reg.example.com/tcp:1")
    assert wp["spec"]["url"] == "oci://reg.example.com/tcp:1"  # no scheme means oci, as in Istio
    assert wp["spec"]["sha256"] == printed
    assert wp["spec"]["type"] == "NETWORK" and wp["spec"]["match"] == [{"mode": "CLIENT"}]


@pytest.mark.parametrize("url_args, expected_url, digest", [
    ([], "file:///etc/wasm/m.wasm", "file"),
    (["--path", "/opt/m.wasm"], "file:///opt/m.wasm", "file"),
    (["--url", "https://h.example/m.wasm"], "https://h.example/m.wasm", "file"),
    (["--url", "https://h.example/m.wasm", "--sha256", "ab" * 32], "https://h.example/m.wasm", "given"),
    (["--url", "oci://r.example/m:1", "--no-sha256"], "oci://r.example/m:1", None),
])
def test_wasmplugin_url_and_digest(url_args, expected_url, digest, tmp_path, capsys):
    module = write_module(tmp_path, "http", "m")
    (wp,), _ = manifests(capsys, str(module), "--kind", "wasmplugin", *url_args)
    assert wp["spec"]["url"] == expected_url
    expected = {"file": hashlib.sha256(module.read_bytes()).hexdigest(), "given": "ab" * 32, None: None}[digest]
    assert wp["spec"].get("sha256") == expected
    assert "pluginConfig" not in wp["spec"]  # no configuration given


def test_type_override_and_context(tmp_path, capsys):
    module = write_module(tmp_path, "root_only")
    docs, _ = manifests(capsys, str(module), "--kind", "wasmplugin", "--kind", "envoyfilter")
    kinds = by_kind(docs)
    assert kinds["WasmPlugin"]["spec"]["type"] == "HTTP"  # no stream callbacks: Istio's default
    docs, _ = manifests(capsys, str(module), "--type", "network", "--context", "ANY")
    kinds = by_kind(docs)
    assert kinds["WasmPlugin"]["spec"]["type"] == "NETWORK"
    assert "match" not in kinds["WasmPlugin"]["spec"]  # ANY: all traffic, Istio's default
    assert kinds["EnvoyFilter"]["spec"]["configPatches"][0]["match"]["context"] == "ANY"
    assert wasm_filter(kinds["envoy"])["name"] == "envoy.filters.network.wasm"


def test_config_from_a_file_and_output_to_a_file(tmp_path, capsys):
    module = write_module(tmp_path, "http")
    (tmp_path / "config.json").write_text('{"a": "b"}\n')
    out = tmp_path / "deploy" / "all.yaml"
    assert main(["manifests", str(module), "--config", f"@{tmp_path / 'config.json'}", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    docs = by_kind(list(yaml.safe_load_all(out.read_text())))
    assert docs["WasmPlugin"]["spec"]["pluginConfig"] == {"a": "b"}
    assert wasm_filter(docs["envoy"])["typed_config"]["config"]["configuration"]["value"] == '{"a": "b"}\n'


def test_config_from_stdin(tmp_path, capsys, monkeypatch):
    module = write_module(tmp_path, "http")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"from": "stdin"}')))
    (wp,), _ = manifests(capsys, str(module), "--kind", "wasmplugin", "--config", "@-")
    assert wp["spec"]["pluginConfig"] == {"from": "stdin"}


def test_large_local_module_gets_a_configmap_warning(pywasm_build, capsys):
    wasm = pywasm_build(EXAMPLES / "http_headers")
    _, text = manifests(capsys, str(wasm), "--kind", "envoyfilter")
    assert "too large for a ConfigMap (1 MiB)" in text


def printed_digest(capsys, argv: list[str]) -> str:
    """Run ``pywasm oci ARGV``; the WasmPlugin sha256 it prints."""
    assert main(["oci", *argv]) == 0, capsys.readouterr().err
    return next(line.split()[-1] for line in capsys.readouterr().out.splitlines()
                if "WasmPlugin sha256:" in line)


def test_oci_sha256_is_read_from_the_image_that_is_pushed(tmp_path, capsys):
    module = write_module(tmp_path, "http", "m")
    image = tmp_path / "m.tar"
    # annotations change the digest: computing it from a fresh image would be wrong here
    pushed = printed_digest(capsys, [str(module), "-o", str(image), "--tag", "0.1.0",
                                     "--annotation", "org.opencontainers.image.source=https://git.example/m"])
    assert pushed != oci.build_image(module.read_bytes()).manifest_digest.removeprefix("sha256:")
    documents, text = manifests(capsys, str(module), "--kind", "wasmplugin", "--kind", "envoyfilter",
                                "--url", "oci://reg.example.com/m:0.1.0", "--image", str(image))
    docs = by_kind(documents)
    assert docs["WasmPlugin"]["spec"]["sha256"] == pushed
    [patch] = [p for p in docs["EnvoyFilter"]["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"]
    code = patch["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]
    assert code["remote"]["sha256"] == pushed
    assert f"sha256 is the manifest digest of the image in {image}" in text
    assert "computed" not in text


def test_oci_sha256_from_an_image_layout_folder(tmp_path, capsys):
    module = write_module(tmp_path, "tcp", "m")
    pushed = printed_digest(capsys, [str(module), "-o", str(tmp_path / "m.tar")])
    folder = tmp_path / "layout"
    with tarfile.open(tmp_path / "m.tar") as archive:
        archive.extractall(folder, filter="data")
    (wp,), _ = manifests(capsys, str(module), "--kind", "wasmplugin", "--url", "reg.example.com/m",
                         "--image", str(folder))
    assert wp["spec"]["sha256"] == pushed


def test_oci_image_with_several_tags_is_chosen_by_the_url_tag(tmp_path):
    wasm = write_module(tmp_path, "http").read_bytes()
    folder = tmp_path / "layout"
    images = [oci.build_image(wasm, tag=tag, annotations={"org.example.n": tag}) for tag in ("1", "2")]
    for image in images:
        for name, data in image.files().items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    index = {"schemaVersion": 2, "manifests": [json.loads(i.index)["manifests"][0] for i in images]}
    (folder / "index.json").write_text(json.dumps(index))
    for image in images:
        assert oci.layout_manifest_digest(folder, wasm, image.tag) == image.manifest_digest
    with pytest.raises(oci.OciError, match=r"2 images in the layout and none tagged '3' \(tags: 1, 2\)"):
        oci.layout_manifest_digest(folder, wasm, "3")


def test_oci_image_of_another_module_is_refused(tmp_path, capsys):
    module = write_module(tmp_path, "http", "m")
    other = write_module(tmp_path, "tcp", "other")
    printed_digest(capsys, [str(other), "-o", str(tmp_path / "other.tar")])
    assert main(["manifests", str(module), "--url", "oci://r.example/m:latest",
                 "--image", str(tmp_path / "other.tar")]) == 1
    err = capsys.readouterr().err
    assert f"pywasm manifests: error: --image {tmp_path / 'other.tar'}: the image sha256:" in err
    assert "holds another module" in err


def test_oci_image_that_is_not_a_layout_is_refused(tmp_path, capsys):
    module = write_module(tmp_path, "http", "m")
    for bad, expected in ((module, "not an OCI image layout"), (tmp_path, "no readable index.json")):
        assert main(["manifests", str(module), "--url", "oci://r.example/m", "--image", str(bad)]) == 1
        assert expected in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected", [
    (["--url", "https://h.example/m.wasm"], "--image: the digest of an image is for an oci:// --url"),
    ([], "--image: the digest of an image is for an oci:// --url"),
    (["--url", "oci://r.example/m", "--sha256", "ab" * 32], "give one way to the digest"),
])
def test_oci_image_option_errors(extra, expected, tmp_path, capsys):
    module = write_module(tmp_path, "http", "m")
    assert main(["manifests", str(module), "--image", str(tmp_path / "m.tar"), *extra]) == 1
    assert expected in capsys.readouterr().err


def test_a_computed_oci_sha256_says_what_it_assumes(tmp_path, capsys, monkeypatch):
    module = write_module(tmp_path, "http", "m")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    (wp,), text = manifests(capsys, str(module), "--kind", "wasmplugin", "--url", "oci://r.example/m:1")
    assert wp["spec"]["sha256"] == oci.build_image(module.read_bytes()).manifest_digest.removeprefix("sha256:")
    comment = " ".join(line.removeprefix("# ") for line in text.splitlines() if line.startswith("#"))
    assert "sha256 is computed, not read from an image" in comment
    assert f"no --annotation, SOURCE_DATE_EPOCH=1700000000, gzip by zlib {zlib.ZLIB_RUNTIME_VERSION}" in comment
    assert "--image IMAGE.tar" in comment

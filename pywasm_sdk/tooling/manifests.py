"""``pywasm manifests``: the YAML that puts a built module into Envoy or Istio.

Three kinds of document, each one a complete resource:

``envoy``
    An Envoy bootstrap for a local run: a listener on 127.0.0.1 with the plugin in front of
    one upstream (HTTP: the wasm filter before the router; network: the wasm filter before
    ``tcp_proxy``). Built by :mod:`.envoy`'s builders, the ones the test-suite and ``pywasm run``
    start Envoy with, so it is a configuration Envoy is known to accept.
``envoyfilter``
    An Istio ``EnvoyFilter``. With the module on the proxy's filesystem (``--path``) it inserts
    the wasm filter itself; with a ``--url`` it uses extension config discovery (ECDS), the form
    in which the istio-agent downloads the module, checks its sha256 and hands Envoy a local copy.
``wasmplugin``
    An Istio ``WasmPlugin`` (url, sha256, pluginConfig, phase, priority, type, vmConfig.env,
    failStrategy, selector).

The wasm filter's configuration inside an EnvoyFilter is taken from the Envoy bootstrap, with only
the module's location swapped, so what ``envoy --mode validate`` accepted is what Istio receives.

Which sha256 goes where: for ``http(s)://`` and ``file://`` the digest of the ``.wasm`` itself; for
``oci://`` the digest of the image *manifest* (what Istio's image fetcher compares): read from the
image that is pushed when it is given (``image``: the layout ``pywasm oci`` wrote, checked to hold
this module), else computed from the image ``pywasm oci`` would build from this module here
(no extra annotations, this ``SOURCE_DATE_EPOCH``, this Python's zlib), and the comment says so.
"""

from __future__ import annotations

import copy
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from . import envoy as E
from . import oci
from .addresses import AddressError, check_port, parse_upstream
from .wasm_file import FilterType, PluginModule

__all__ = ["KINDS", "ManifestError", "Options", "Document", "build_documents", "render"]

Kind = Literal["envoy", "envoyfilter", "wasmplugin"]
KINDS: tuple[Kind, ...] = ("envoy", "envoyfilter", "wasmplugin")

#: --fail-strategy -> (Envoy PluginConfig.failure_policy, Istio WasmPlugin.failStrategy)
FAIL_STRATEGIES = {"close": ("FAIL_CLOSED", "FAIL_CLOSE"), "open": ("FAIL_OPEN", "FAIL_OPEN"),
                   "reload": ("FAIL_RELOAD", "FAIL_RELOAD")}
PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")
CONTEXTS = ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "ANY")
PULL_POLICIES = ("IfNotPresent", "Always")
URL_SCHEMES = ("oci", "http", "https", "file")

_WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.{kind}.wasm.v3.Wasm"
_ISTIO_CONFIGMAP_LIMIT = 1 << 20
_DNS_LABELS = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """An option that cannot produce a valid manifest; the message names the option."""


@dataclass
class Options:
    """Everything the documents depend on besides the module; see ``pywasm manifests --help``."""

    name: str
    filter_type: FilterType
    plugin_config: bytes = b""
    root_id: str = ""
    env: dict[str, str] = field(default_factory=dict)       # inline VM environment variables
    host_env: list[str] = field(default_factory=list)        # copied from the proxy's environment
    fail_strategy: str | None = None                         # a key of FAIL_STRATEGIES
    reload_backoff: float | None = None                      # s between VM reloads (fail_strategy reload)
    # Istio
    namespace: str | None = None
    selector: dict[str, str] = field(default_factory=dict)
    context: str | None = None                               # default: by filter type
    url: str | None = None                                   # where Istio fetches the module
    path: str | None = None                                  # or where it is on the proxy
    sha256: str | None = None                                # None: computed; "": left out
    image: str | None = None                                 # oci: the image layout that is pushed
    phase: str | None = None
    priority: int | None = None
    pull_policy: str | None = None
    # Envoy bootstrap
    listen_port: int = 10000
    admin_port: int = 9901
    upstream: tuple[str, int] = ("127.0.0.1", 8080)
    envoy_path: str | None = None                            # default: the module's own path


@dataclass(frozen=True)
class Document:
    """One YAML document: what it is (``kind``), a comment saying how to use it, the resource."""

    kind: Kind
    comment: str
    body: dict[str, Any]


# ------------------------------------------------------------------------------ validation

def k8s_name(name: str) -> str:
    """A Kubernetes object name (DNS-1123 subdomain) from a plugin name: "http_headers" -> "http-headers"."""
    candidate = name.lower().replace("_", "-")
    if len(candidate) > 253 or not _DNS_LABELS.fullmatch(candidate):
        raise ManifestError(f"--name {name!r}: a resource name must be lower-case letters, digits, "
                            "'-' and '.', starting and ending with a letter or digit")
    return candidate


def _check(options: Options) -> None:
    if not options.name or len(options.name) > 256:
        raise ManifestError("--name: give a plugin name of 1 to 256 characters")
    k8s_name(options.name)
    if options.namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", options.namespace):
        raise ManifestError(f"--namespace {options.namespace!r}: not a valid namespace name")
    for key, value in options.selector.items():
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
            raise ManifestError(f"--selector {key}={value}: not a valid Kubernetes label")
    for key in [*options.env, *options.host_env]:
        if not _ENV_NAME.fullmatch(key):
            raise ManifestError(f"--env {key!r}: an environment variable name is letters, digits and _")
    if options.fail_strategy is not None and options.fail_strategy not in FAIL_STRATEGIES:
        raise ManifestError(f"--fail-strategy {options.fail_strategy!r}: one of {', '.join(FAIL_STRATEGIES)}")
    if options.reload_backoff is not None:
        if options.fail_strategy != "reload":
            raise ManifestError("--reload-backoff: only with --fail-strategy reload (it paces the VM reloads)")
        if not 0.01 <= options.reload_backoff <= 86400:
            raise ManifestError(f"--reload-backoff {options.reload_backoff:g}: give seconds from 0.01 to 86400")
    if options.phase is not None and options.phase not in PHASES:
        raise ManifestError(f"--phase {options.phase!r}: one of {', '.join(PHASES)}")
    if options.context is not None and options.context not in CONTEXTS:
        raise ManifestError(f"--context {options.context!r}: one of {', '.join(CONTEXTS)}")
    if options.priority is not None and not -(1 << 31) <= options.priority < (1 << 31):
        raise ManifestError(f"--priority {options.priority}: must fit in a 32-bit signed integer")
    if options.sha256 and not _HEX64.fullmatch(options.sha256):
        raise ManifestError(f"--sha256 {options.sha256!r}: expected 64 lower-case hex digits")
    if options.image is not None:
        if options.sha256 is not None:
            raise ManifestError("--image and --sha256/--no-sha256: give one way to the digest")
        if not options.url or urlsplit(normalise_url(options.url)).scheme != "oci":
            raise ManifestError("--image: the digest of an image is for an oci:// --url")
    if options.path is not None and not options.path.startswith("/"):
        raise ManifestError(f"--path {options.path!r}: give the absolute path of the module inside "
                            "the proxy's container, e.g. /etc/wasm/plugin.wasm")
    try:
        check_port(options.listen_port, "--listen-port")
        check_port(options.admin_port, "--admin-port")
        parse_upstream(f"{options.upstream[0]}:{options.upstream[1]}")
    except AddressError as exc:
        raise ManifestError(str(exc)) from None


def normalise_url(url: str) -> str:
    """Istio's url rules: no scheme means ``oci://``; only oci, http(s) and file are fetched."""
    if "://" not in url:
        url = "oci://" + url
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        raise ManifestError(f"--url {url!r}: Istio fetches modules from {', '.join(s + '://' for s in URL_SCHEMES)}")
    if parts.scheme != "file" and not parts.netloc:
        raise ManifestError(f"--url {url!r}: no host (e.g. oci://registry.example.com/plugins/name:0.1.0)")
    if parts.scheme == "file" and not parts.path.startswith("/"):
        raise ManifestError(f"--url {url!r}: a file:// url needs an absolute path (file:///etc/wasm/plugin.wasm)")
    return url


def plugin_config_json(raw: bytes) -> dict[str, Any] | None:
    """The configuration as a WasmPlugin ``pluginConfig`` (a JSON object), None when empty."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"--config is not JSON ({exc}); a WasmPlugin's pluginConfig must be a JSON object (Istio "
            "passes it to the plugin as JSON text). Write the configuration as a JSON object, or "
            "leave the WasmPlugin out: --kind envoy --kind envoyfilter") from None
    if not isinstance(value, dict):
        raise ManifestError(f"--config is JSON but a {type(value).__name__}; a WasmPlugin's pluginConfig "
                            "must be a JSON object, e.g. {\"header\": \"x-hello\"}")
    return value


# ------------------------------------------------------------------------------ documents

def _default_path(module: PluginModule) -> str:
    return f"/etc/wasm/{module.path.name}"


def _context(options: Options) -> str:
    if options.context:
        return options.context
    return "SIDECAR_INBOUND" if options.filter_type == "http" else "SIDECAR_OUTBOUND"


def envoy_bootstrap(module: PluginModule, options: Options) -> dict[str, Any]:
    """The Envoy bootstrap, from :mod:`.envoy`'s builders, plus what they do not cover."""
    fail = FAIL_STRATEGIES[options.fail_strategy][0] if options.fail_strategy else None
    wasm_path = options.envoy_path or module.path.resolve()
    if options.filter_type == "http":
        config = E.http_bootstrap(
            wasm_path=wasm_path, plugin_config=options.plugin_config, root_id=options.root_id,
            listener_port=options.listen_port, admin_port=options.admin_port, upstream=options.upstream,
            env=options.env or None, host_env=options.host_env or None, failure_policy=fail,
            plugin_name=options.name, vm_id=options.name)
    else:
        config = E.tcp_bootstrap(
            wasm_path=wasm_path, plugin_config=options.plugin_config, root_id=options.root_id,
            listener_port=options.listen_port, admin_port=options.admin_port,
            clusters={"upstream": options.upstream}, default_cluster="upstream",
            env=options.env or None, host_env=options.host_env or None, failure_policy=fail,
            plugin_name=options.name, vm_id=options.name)
    plugin = _wasm_filter(config)["typed_config"]["config"]
    if options.reload_backoff is not None:
        # Envoy waits at least this long (1 s by default, jittered up to 1.5x) after a reload
        # before it tries the next one; requests in between get the fail-closed answer.
        seconds = f"{options.reload_backoff:.3f}".rstrip("0").rstrip(".")
        plugin["reload_config"] = {"backoff": {"base_interval": f"{seconds}s"}}
    return config


def _wasm_filter(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The wasm filter entry of a bootstrap made by :func:`envoy_bootstrap`."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            network_filter: dict[str, Any]
            for network_filter in chain["filters"]:
                if network_filter["name"] == "envoy.filters.network.wasm":
                    return network_filter
                http_filter: dict[str, Any]
                for http_filter in network_filter.get("typed_config", {}).get("http_filters", []):
                    if http_filter["name"] == "envoy.filters.http.wasm":
                        return http_filter
    raise AssertionError("the bootstrap has no wasm filter")  # the builders always add one


def _oci_tag(url: str) -> str | None:
    """The tag of an oci:// reference (``latest`` when none, as Istio; None for a digest)."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if "@" in name:
        return None
    return name.rpartition(":")[2] if ":" in name else "latest"


def _module_sha256(module: PluginModule, options: Options, url: str) -> str | None:
    if options.sha256 is not None:
        return options.sha256 or None
    if urlsplit(url).scheme == "oci":
        if options.image is not None:
            try:
                digest = oci.layout_manifest_digest(options.image, module.data, _oci_tag(url))
            except oci.OciError as exc:
                raise ManifestError(f"--image {exc}") from None
        else:
            digest = oci.build_image(module.data).manifest_digest
        return digest.removeprefix("sha256:")
    return module.sha256


def _digest_note(options: Options, url: str) -> str | None:
    """Where an oci:// sha256 comes from, in words (for the documents' comments)."""
    if not url.startswith("oci://") or options.sha256 is not None:
        return None
    if options.image is not None:
        return (f"sha256 is the manifest digest of the image in {options.image}: push that image "
                "unchanged\n(e.g. skopeo copy oci-archive:IMAGE.tar:TAG docker://...).")
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return ("sha256 is computed, not read from an image: the manifest digest of the image `pywasm oci` "
            "builds from\nthis module here (no --annotation, "
            f"SOURCE_DATE_EPOCH={epoch or 'unset'}, gzip by zlib {zlib.ZLIB_RUNTIME_VERSION}). An image "
            "built otherwise\n(annotations, another zlib or SOURCE_DATE_EPOCH, docker/buildah) has another "
            "digest: pass the image\nyou push with --image IMAGE.tar, or --sha256 with the digest your "
            "registry shows.")


def _remote_code(module: PluginModule, options: Options, url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "oci") else 80)
    remote: dict[str, Any] = {"http_uri": {
        "uri": url,
        # Required by Envoy's HttpUri; the istio-agent downloads the module itself, so this is
        # only used when agent conversion is off (then a cluster of this name must exist).
        "cluster": f"outbound|{port}||{parts.hostname or 'localhost'}",
        "timeout": "30s"}}
    digest = _module_sha256(module, options, url)
    if digest:
        remote["sha256"] = digest
    return {"remote": remote}


def _metadata(options: Options) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": k8s_name(options.name)}
    if options.namespace:
        meta["namespace"] = options.namespace
    return meta


def envoy_filter(module: PluginModule, options: Options, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """An Istio EnvoyFilter inserting the plugin (inline with a local file, or through ECDS)."""
    wasm = copy.deepcopy(_wasm_filter(bootstrap))
    vm = wasm["typed_config"]["config"]["vm_config"]
    http = options.filter_type == "http"
    if http:
        listener = {"filterChain": {"filter": {
            "name": "envoy.filters.network.http_connection_manager",
            "subFilter": {"name": "envoy.filters.http.router"}}}}
    else:
        listener = {"filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}
    match = {"context": _context(options), "listener": listener}
    apply_to = "HTTP_FILTER" if http else "NETWORK_FILTER"
    if options.url:
        url = normalise_url(options.url)
        vm["code"] = _remote_code(module, options, url)
        resource = f"pywasm.{options.name}"
        patches = [
            {"applyTo": "EXTENSION_CONFIG",
             "patch": {"operation": "ADD", "value": {"name": resource, "typed_config": wasm["typed_config"]}}},
            {"applyTo": apply_to, "match": match,
             "patch": {"operation": "INSERT_BEFORE", "value": {"name": resource, "config_discovery": {
                 # initial_fetch_timeout 0s: the listener waits for the module instead of serving
                 # without the filter while the agent downloads it.
                 "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
                 "type_urls": [_WASM_TYPE.format(kind="http" if http else "network")]}}}},
        ]
    else:
        vm["code"] = {"local": {"filename": options.path or _default_path(module)}}
        patches = [{"applyTo": apply_to, "match": match,
                    "patch": {"operation": "INSERT_BEFORE", "value": wasm}}]
    spec: dict[str, Any] = {}
    if options.selector:
        spec["workloadSelector"] = {"labels": dict(options.selector)}
    spec["configPatches"] = patches
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": _metadata(options), "spec": spec}


def wasm_plugin(module: PluginModule, options: Options) -> dict[str, Any]:
    """An Istio WasmPlugin (extensions.istio.io/v1alpha1)."""
    url = normalise_url(options.url) if options.url else "file://" + (options.path or _default_path(module))
    spec: dict[str, Any] = {}
    if options.selector:
        spec["selector"] = {"matchLabels": dict(options.selector)}
    spec["url"] = url
    digest = _module_sha256(module, options, url)
    if digest:
        spec["sha256"] = digest
    if options.pull_policy:
        spec["imagePullPolicy"] = options.pull_policy
    spec["type"] = "HTTP" if options.filter_type == "http" else "NETWORK"
    if options.phase:
        spec["phase"] = options.phase
    if options.priority is not None:
        spec["priority"] = options.priority
    if options.fail_strategy:
        spec["failStrategy"] = FAIL_STRATEGIES[options.fail_strategy][1]
    if options.root_id:
        spec["pluginName"] = options.root_id
    mode = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT"}.get(_context(options))
    if mode:
        spec["match"] = [{"mode": mode}]
    config = plugin_config_json(options.plugin_config)
    if config is not None:
        spec["pluginConfig"] = config
    env = [{"name": k, "value": v} for k, v in options.env.items()]
    env += [{"name": k, "valueFrom": "HOST"} for k in options.host_env]
    if env:
        spec["vmConfig"] = {"env": env}
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": _metadata(options), "spec": spec}


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _comments(kind: Kind, module: PluginModule, options: Options, body: dict[str, Any]) -> str:
    what = "HTTP" if options.filter_type == "http" else "network (TCP)"
    if kind == "envoy":
        host, port = options.upstream
        return (f"Envoy bootstrap: {what} listener 127.0.0.1:{options.listen_port} -> {options.name} -> "
                f"{host}:{port}; admin 127.0.0.1:{options.admin_port}.\n"
                "Run: envoy -c envoy.yaml   (check first: envoy --mode validate -c envoy.yaml)")
    if kind == "envoyfilter":
        if options.url:
            note = _digest_note(options, normalise_url(options.url))
            return (f"Istio EnvoyFilter ({what}, extension config discovery): the istio-agent downloads "
                    f"{normalise_url(options.url)},\nchecks its sha256 and gives Envoy a local copy; a failed "
                    "download is rejected instead of breaking the listener."
                    + ("\nA network filter through ECDS needs an Istio that offers WasmPlugin type NETWORK."
                       if options.filter_type == "network" else "")
                    + (f"\n{note}" if note else ""))
        path = options.path or _default_path(module)
        note = (f" This module is {_size(module.size)}: too large for a ConfigMap (1 MiB); use a volume, "
                "or --url." if module.size > _ISTIO_CONFIGMAP_LIMIT else "")
        return (f"Istio EnvoyFilter ({what}): Envoy reads the module from {path} in the istio-proxy "
                "container.\nMount it there, e.g. with the pod annotations sidecar.istio.io/userVolume "
                f"and sidecar.istio.io/userVolumeMount.{note}")
    url = body["spec"]["url"]
    lines = [f"Istio WasmPlugin ({what})."]
    note = _digest_note(options, url)
    if note:
        lines.append(note)
    elif url.startswith("file://"):
        lines.append(f"The istio-agent reads the module from {url.removeprefix('file://')} in the "
                     "istio-proxy container.")
    if "pluginConfig" in body["spec"]:
        lines.append("Istio passes pluginConfig to on_configure as JSON text.")
    if options.reload_backoff is not None:
        lines.append("A WasmPlugin has no field for --reload-backoff: Envoy's default (1 s) applies.")
    return "\n".join(lines)


def build_documents(module: PluginModule, options: Options,
                    kinds: tuple[Kind, ...] | list[Kind] = KINDS) -> list[Document]:
    """The requested documents, in the order of ``KINDS``; ``ManifestError`` for bad options."""
    _check(options)
    bootstrap = envoy_bootstrap(module, options)
    docs: list[Document] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "envoy":
            body = bootstrap
        elif kind == "envoyfilter":
            body = envoy_filter(module, options, bootstrap)
        else:
            body = wasm_plugin(module, options)
        docs.append(Document(kind, _comments(kind, module, options, body), body))
    return docs


def render(documents: list[Document]) -> str:
    """A YAML stream: each document preceded by its comment, separated by ``---``."""
    parts = []
    for doc in documents:
        comment = "\n".join(f"# {line}".rstrip() for line in doc.comment.splitlines())
        parts.append(f"{comment}\n{yaml.safe_dump(doc.body, sort_keys=False, width=100)}")
    return "---\n".join(parts)

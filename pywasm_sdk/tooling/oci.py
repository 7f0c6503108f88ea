"""``pywasm oci``: a plugin module as an OCI image that Istio's ``WasmPlugin`` pulls.

The image is the *compat* variant of the Wasm image spec (solo-io/wasm ``spec/spec-compat.md``),
the form ``buildah``/``docker build`` with ``FROM scratch`` + one ``COPY plugin.wasm`` produce
and the one Istio's image fetcher tries right after Docker images:

- a manifest (``application/vnd.oci.image.manifest.v1+json``) annotated
  ``module.wasm.image/variant: compat``;
- exactly one layer, ``application/vnd.oci.image.layer.v1.tar+gzip``: a tar.gz that holds
  ``plugin.wasm`` (Istio finds the file by that base name);
- an image config (``application/vnd.oci.image.config.v1+json``) whose ``rootfs.diff_ids``
  names the uncompressed layer, as registries and tools expect. Istio ignores the config.

The output is an OCI *image layout* (``oci-layout``, ``index.json``, ``blobs/sha256/...``) in one
uncompressed tar, which ``skopeo copy oci-archive:image.tar:TAG docker://REGISTRY/NAME:TAG`` (and
other OCI tools) push to a registry.

Reproducible on purpose: the same module gives the same bytes, hence the same manifest digest
(fixed mtimes, owners and modes, sorted entries, gzip header without name or time, JSON with a
fixed key order). That digest is what a ``WasmPlugin``'s ``sha256`` is compared against, so
``pywasm manifests --url oci://...`` can compute it from the ``.wasm`` alone. ``SOURCE_DATE_EPOCH``
(the reproducible-builds convention), when set, is used as the files' mtime instead of 0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_MEDIA_TYPE", "INDEX_MEDIA_TYPE", "LAYER_MEDIA_TYPE", "MANIFEST_MEDIA_TYPE",
           "VARIANT_ANNOTATION", "Blob", "Image", "OciError", "build_image", "layout_manifest_digest",
           "write_layout_tar"]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT_ANNOTATION = "module.wasm.image/variant"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
WASM_FILE_NAME = "plugin.wasm"  # the name Istio's fetcher looks for in the layer

# A tag in the OCI distribution spec: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_ANNOTATION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


class OciError(ValueError):
    """A bad option (tag, annotation) for an image; the message names it."""


@dataclass(frozen=True)
class Blob:
    """One content-addressed blob of the layout, with the descriptor that points at it."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if annotations:
            out["annotations"] = annotations
        return out


@dataclass(frozen=True)
class Image:
    """The blobs of one image and the layout files that point at them."""

    tag: str
    layer: Blob
    config: Blob
    manifest: Blob
    index: bytes

    @property
    def manifest_digest(self) -> str:
        """``sha256:<hex>``: the digest a registry reports and a WasmPlugin's ``sha256`` matches."""
        return self.manifest.digest

    def files(self) -> dict[str, bytes]:
        """Path inside the layout -> bytes, for every file of the layout."""
        out = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": self.index}
        for blob in (self.layer, self.config, self.manifest):
            out["blobs/sha256/" + blob.digest.removeprefix("sha256:")] = blob.data
        return out


def _json(obj: Any) -> bytes:
    """Canonical bytes: the same object always serialises the same way."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _mtime() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise OciError(f"SOURCE_DATE_EPOCH={raw!r}: expected a number of seconds since 1970")
    return int(raw)


def _tar(files: dict[str, bytes], mtime: int, dirs: tuple[str, ...] = ()) -> bytes:
    """A deterministic tar: given entries in sorted order, root-owned, fixed mtime and modes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        entries = [(d, None) for d in dirs] + list(files.items())
        for name, data in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _gzip(data: bytes) -> bytes:
    """gzip without a file name and with mtime 0 in its header (both would vary otherwise)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buffer.getvalue()


def _check_annotations(annotations: dict[str, str]) -> None:
    for key in annotations:
        if not _ANNOTATION_KEY.fullmatch(key):
            raise OciError(f"annotation key {key!r}: use letters, digits and . _ / - "
                           "(e.g. org.opencontainers.image.source)")
        if key == VARIANT_ANNOTATION:
            raise OciError(f"annotation {key} is set by pywasm oci (always 'compat')")


def build_image(wasm: bytes, *, tag: str = "latest", annotations: dict[str, str] | None = None) -> Image:
    """The compat-variant image of one module, entirely in memory (deterministic)."""
    if not _TAG.fullmatch(tag):
        raise OciError(f"tag {tag!r}: a tag is 1-128 letters, digits, '_', '.' or '-' and does not "
                       "start with '.' or '-' (e.g. 0.1.0)")
    extra = dict(annotations or {})
    _check_annotations(extra)
    mtime = _mtime()
    layer_tar = _tar({WASM_FILE_NAME: wasm}, mtime)
    layer = Blob(LAYER_MEDIA_TYPE, _gzip(layer_tar))
    # os/architecture are required fields; "wasip1"/"wasm" is what container tools use for wasm
    # images. Nothing here is a runnable container, so "config" is empty.
    config = Blob(CONFIG_MEDIA_TYPE, _json({
        "architecture": "wasm", "os": "wasip1", "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    }))
    manifest = Blob(MANIFEST_MEDIA_TYPE, _json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": {VARIANT_ANNOTATION: "compat", **dict(sorted(extra.items()))},
    }))
    index = _json({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest.descriptor({REF_NAME_ANNOTATION: tag})],
    })
    return Image(tag, layer, config, manifest, index)


def write_layout_tar(image: Image, output: str | os.PathLike[str]) -> Path:
    """Write the image layout as one tar (replacing ``output`` atomically); returns its path."""
    out = Path(output)
    if out.is_dir():
        raise OciError(f"{out}: is a folder; name the .tar file to write, e.g. {out / 'image.tar'}")
    data = _tar(image.files(), _mtime(), dirs=("blobs", "blobs/sha256"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


#: layer media types that carry a module: a tar(.gz) holding it (compat), or the module itself (oci)
_TAR_LAYERS = {LAYER_MEDIA_TYPE: True, "application/vnd.docker.image.rootfs.diff.tar.gzip": True,
               "application/vnd.oci.image.layer.v1.tar": False}
_WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"


def _layout_reader(path: Path) -> Any:
    """A function reading one file of an image layout: a folder, or a tar of one (oci-archive)."""
    if path.is_dir():
        return lambda name: (path / name).read_bytes()
    try:
        with tarfile.open(path) as archive:
            files = {m.name.removeprefix("./"): archive.extractfile(m).read()  # type: ignore[union-attr]
                     for m in archive.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError) as exc:
        raise OciError(f"{path}: not an OCI image layout (a folder, or the tar `pywasm oci` writes): {exc}") from None
    return files.__getitem__


def _wasm_in_layer(media_type: str, data: bytes) -> bytes | None:
    if media_type == _WASM_LAYER:
        return data
    if media_type not in _TAR_LAYERS:
        return None
    raw = gzip.decompress(data) if _TAR_LAYERS[media_type] else data
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        files = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".wasm")]
        chosen = next((m for m in files if Path(m.name).name == WASM_FILE_NAME), files[0] if files else None)
        if chosen is None:
            return None
        extracted = tar.extractfile(chosen)
        return extracted.read() if extracted else None


def layout_manifest_digest(layout: str | os.PathLike[str], wasm: bytes, tag: str | None = None) -> str:
    """``sha256:<hex>`` of the manifest of the image in ``layout`` that holds ``wasm``.

    ``layout`` is an OCI image layout (a folder, or one tar of it as ``pywasm oci`` writes and
    ``skopeo copy oci-archive:...`` pushes). The image is the one the index names ``tag``, or
    the only one. Raises OciError when there is no such image, its blobs do not match their
    digests, or it holds another module than ``wasm`` (so the digest is never that of the wrong
    image).
    """
    path = Path(layout)
    read = _layout_reader(path)

    def blob(digest: str) -> bytes:
        algorithm, _, hexdigest = digest.partition(":")
        try:
            data = read(f"blobs/{algorithm}/{hexdigest}")
        except (OSError, KeyError):
            raise OciError(f"{path}: blob {digest} is missing from the layout") from None
        if algorithm != "sha256" or hashlib.sha256(data).hexdigest() != hexdigest:
            raise OciError(f"{path}: blob {digest} does not have that digest (a damaged layout)")
        return data

    try:
        index = json.loads(read("index.json"))
        manifests = [d for d in index["manifests"] if d.get("mediaType") == MANIFEST_MEDIA_TYPE]
    except (OSError, KeyError, TypeError, ValueError):
        raise OciError(f"{path}: no readable index.json: not an OCI image layout") from None
    tags = {(d.get("annotations") or {}).get(REF_NAME_ANNOTATION): d for d in manifests}
    if tag is not None and tag in tags:
        chosen = tags[tag]
    elif len(manifests) == 1:
        chosen = manifests[0]
    else:
        listed = ", ".join(str(t) for t in tags) or "none"
        raise OciError(f"{path}: {len(manifests)} images in the layout and none tagged {tag!r} "
                       f"(tags: {listed}); give the url's tag or a layout with one image")
    manifest = json.loads(blob(chosen["digest"]))
    held = [w for layer in manifest.get("layers", [])
            if (w := _wasm_in_layer(layer.get("mediaType", ""), blob(layer["digest"]))) is not None]
    if not held:
        raise OciError(f"{path}: the image {chosen['digest']} holds no .wasm module")
    if wasm not in held:
        found = ", ".join(hashlib.sha256(w).hexdigest()[:12] for w in held)
        raise OciError(f"{path}: the image {chosen['digest']} holds another module (sha256 {found}...) "
                       f"than the one given (sha256 {hashlib.sha256(wasm).hexdigest()[:12]}...)")
    return chosen["digest"]

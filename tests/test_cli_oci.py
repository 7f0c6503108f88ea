"""`pywasm oci`: an OCI image layout in the compat variant Istio pulls, checked blob by blob."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import wasmtime

from pywasm_sdk.tooling import oci
from pywasm_sdk.tooling.cli import main

from .conftest import EXAMPLES
from .test_cli_helpers import module_bytes, write_module


def unpack_layout(image: Path) -> dict[str, bytes]:
    """Every regular file of the image tar, checking the tar itself is plain and root-owned."""
    files = {}
    with tarfile.open(image, mode="r:") as tar:  # uncompressed
        for member in tar.getmembers():
            assert member.uid == 0 and member.gid == 0 and member.uname == "" and member.gname == ""
            assert not member.name.startswith(("/", "..")) and ".." not in member.name.split("/")
            if member.isfile():
                files[member.name] = tar.extractfile(member).read()
            else:
                assert member.isdir(), member.name
    return files


def blob(files: dict[str, bytes], descriptor: dict) -> bytes:
    """The blob a descriptor points at, after checking its digest and size."""
    algorithm, _, hexdigest = descriptor["digest"].partition(":")
    assert algorithm == "sha256"
    data = files[f"blobs/sha256/{hexdigest}"]
    assert hashlib.sha256(data).hexdigest() == hexdigest, "blob content does not match its digest"
    assert len(data) == descriptor["size"]
    return data


def check_image(image: Path, wasm: bytes, tag: str) -> dict:
    """Walk index -> manifest -> config and layer like a registry client; returns the manifest."""
    files = unpack_layout(image)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2 and index["mediaType"] == oci.INDEX_MEDIA_TYPE
    (entry,) = index["manifests"]
    assert entry["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": tag}
    manifest = json.loads(blob(files, entry))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["config"]["mediaType"] == oci.CONFIG_MEDIA_TYPE
    config = json.loads(blob(files, manifest["config"]))
    (layer_descriptor,) = manifest["layers"]  # the compat variant has exactly one layer
    assert layer_descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    layer = blob(files, layer_descriptor)
    assert layer[:2] == b"\x1f\x8b"
    layer_tar = gzip.decompress(layer)
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}
    assert config["os"] and config["architecture"]
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "plugin.wasm" and member.isfile() and member.mode == 0o644
        assert tar.extractfile(member).read() == wasm
    # nothing in the layout that nothing points at
    referenced = {f"blobs/sha256/{d['digest'].split(':')[1]}"
                  for d in (entry, manifest["config"], layer_descriptor)}
    assert set(files) == {"oci-layout", "index.json"} | referenced
    return manifest


def test_image_of_a_module(tmp_path, capsys):
    path = write_module(tmp_path, "http")
    image = tmp_path / "out" / "image.tar"
    assert main(["oci", str(path), "-o", str(image), "--tag", "0.1.0"]) == 0
    manifest = check_image(image, path.read_bytes(), "0.1.0")
    out = capsys.readouterr().out
    digest = oci.build_image(path.read_bytes()).manifest_digest
    assert f"manifest digest: {digest}" in out
    assert f"WasmPlugin sha256: {digest.removeprefix('sha256:')}" in out
    assert f"skopeo copy oci-archive:{image}:0.1.0" in out
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}


def test_image_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    path = write_module(tmp_path, "tcp")
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    assert main(["oci", str(path), "-o", str(first)]) == 0
    assert main(["oci", str(path), "-o", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert {m.mtime for m in tar.getmembers()} == {0}
    layer = next(data for name, data in unpack_layout(first).items()
                 if name.startswith("blobs/") and data[:2] == b"\x1f\x8b")
    assert layer[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert layer[3] & 0x08 == 0       # no file name in the gzip header


def test_source_date_epoch_sets_the_times(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    path = write_module(tmp_path, "http")
    assert main(["oci", str(path), "-o", str(tmp_path / "i.tar")]) == 0
    with tarfile.open(tmp_path / "i.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    with_epoch = oci.build_image(path.read_bytes()).manifest_digest
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert oci.build_image(path.read_bytes()).manifest_digest != with_epoch


def test_the_tag_does_not_change_the_manifest_digest_but_annotations_do(tmp_path):
    data = module_bytes("http")
    assert oci.build_image(data, tag="a").manifest_digest == oci.build_image(data, tag="b").manifest_digest
    annotated = oci.build_image(data, annotations={"org.opencontainers.image.source": "https://x"})
    assert annotated.manifest_digest != oci.build_image(data).manifest_digest
    path = write_module(tmp_path, "http")
    assert main(["oci", str(path), "-o", str(tmp_path / "i.tar"),
                 "--annotation", "org.opencontainers.image.version=1.2"]) == 0
    manifest = check_image(tmp_path / "i.tar", data, "latest")
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat",
                                       "org.opencontainers.image.version": "1.2"}


def test_module_without_the_0_2_1_marker_warns(tmp_path, capsys):
    path = tmp_path / "old.wasm"
    path.write_bytes(wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_1_0")))'))
    assert main(["oci", str(path), "-o", str(tmp_path / "i.tar")]) == 0
    assert "warning: the module declares proxy-wasm ABI 0.1.0" in capsys.readouterr().err


def test_image_of_a_built_plugin(pywasm_build, tmp_path):
    wasm = pywasm_build(EXAMPLES / "http_headers")
    image = tmp_path / "http_headers.tar"
    assert main(["oci", str(wasm), "-o", str(image), "--tag", "0.1.0"]) == 0
    check_image(image, wasm.read_bytes(), "0.1.0")


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (Debian package skopeo)")
def test_skopeo_reads_and_copies_the_image(tmp_path):
    """A third-party OCI client agrees: it verifies every blob and keeps the manifest digest."""
    path = write_module(tmp_path, "http")
    image = tmp_path / "image.tar"
    assert main(["oci", str(path), "-o", str(image), "--tag", "0.1.0"]) == 0
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{image}:0.1.0"],
                         capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == oci.build_image(path.read_bytes()).manifest_digest
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{image}:0.1.0", f"oci:{tmp_path / 'copy'}:0.1.0"],
                   check=True, capture_output=True)
    index = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == oci.build_image(path.read_bytes()).manifest_digest

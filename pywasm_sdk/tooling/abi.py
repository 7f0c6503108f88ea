"""The proxy-wasm ABI, loaded from ``abi/proxy_wasm.yaml``, and what is derived from it.

Rule of this module: nothing about the ABI is typed in here by hand. The core signatures the
build checks imports and exports against, the bridge the linker generates (:mod:`.bridge`), the
mock host's import table and the SDK's generated constants module (``pywasm_sdk/_abi.py``) all
come from the YAML file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import resources

#: core wasm value types of the scalar ABI types
_SCALAR_CORE = {"u32": "i32", "i32": "i32", "bool": "i32", "u64": "i64", "i64": "i64"}


@dataclass(frozen=True)
class Param:
    name: str
    type: str

    def core_types(self) -> list[str]:
        """Core wasm types of this parameter in proxy-wasm's own (C) signature."""
        if self.type in ("bytes", "string"):
            return ["i32", "i32"]
        return [_SCALAR_CORE[self.type]]


@dataclass(frozen=True)
class Hostcall:
    """One ``env.proxy_*`` import: inputs, out-pointer outputs, and an i32 status result."""

    name: str
    params: tuple[Param, ...]
    returns: tuple[Param, ...]
    doc: str

    def core_signature(self) -> tuple[list[str], list[str]]:
        """proxy-wasm's signature: inputs, then one i32 pointer per output word, -> i32."""
        params = [t for p in self.params for t in p.core_types()]
        for out in self.returns:
            params += ["i32", "i32"] if out.type == "bytes" else ["i32"]
        return params, ["i32"]


@dataclass(frozen=True)
class Callback:
    """One ``proxy_on_*`` export the host may call."""

    name: str
    params: tuple[Param, ...]
    result: str | None  # None, "bool" or "action"

    def core_signature(self) -> tuple[list[str], list[str]]:
        params = [t for p in self.params for t in p.core_types()]
        return params, ([] if self.result is None else ["i32"])


@dataclass(frozen=True)
class Abi:
    version: str
    marker: str
    enums: dict[str, dict[str, int]]
    limits: dict[str, int]
    hostcalls: dict[str, Hostcall]
    sdk_imports: dict[str, Hostcall]
    callbacks: dict[str, Callback]
    memory_export: str
    allocator_export: str
    wasi_allowed: dict[str, tuple[list[str], list[str]]]


def _params(spec: dict | None) -> tuple[Param, ...]:
    return tuple(Param(n, t) for n, t in (spec or {}).items())


def _parse_signature(text: str) -> tuple[list[str], list[str]]:
    """``"(i32 i64) -> i32"`` -> (["i32", "i64"], ["i32"])."""
    params, _, result = text.partition("->")
    return params.strip().strip("()").split(), result.split()


@functools.cache
def load(path: Path | None = None) -> Abi:
    """Read and check the ABI description (cached: it never changes during a run)."""
    raw = yaml.safe_load((path or resources.abi_dir() / "proxy_wasm.yaml").read_text())

    def calls(section: str) -> dict[str, Hostcall]:
        return {name: Hostcall(name, _params(spec.get("params")), _params(spec.get("returns")),
                               spec.get("doc", ""))
                for name, spec in raw.get(section, {}).items()}

    hostcalls, sdk_imports = calls("hostcalls"), calls("sdk_imports")
    callbacks = {
        name: Callback(name, _params(spec.get("params")), spec.get("result"))
        for name, spec in raw["callbacks"].items()
    }
    abi = Abi(
        version=raw["abi_version"],
        marker=raw["abi_marker"],
        enums=raw["enums"],
        limits=raw["limits"],
        hostcalls=hostcalls,
        sdk_imports=sdk_imports,
        callbacks=callbacks,
        memory_export=raw["module_exports"]["memory"],
        allocator_export=raw["module_exports"]["allocator"],
        wasi_allowed={n: _parse_signature(s) for n, s in raw["wasi_preview1_allowed"].items()},
    )
    return abi


WORLD_PACKAGE = "pywasm:proxy"
WORLD_NAME = "plugin"
#: the one export of the world; componentize-py needs one, nothing ever calls it
UNUSED_EXPORT = "pywasm-unused"


def wit_world() -> str:
    """The WIT world every plugin is componentized against: no imports, one unused export.

    The component is only the vehicle of the pre-initialised interpreter: the linker adds the
    proxy-wasm imports and exports itself (the bridge, see :mod:`.bridge`), so componentize-py
    generates no bindings and its runtime is never on the path of a hostcall or a callback.
    """
    return (f"package {WORLD_PACKAGE};\n\nworld {WORLD_NAME} {{\n"
            f"  export {UNUSED_EXPORT}: func();\n}}\n")


def runtime_module_source(abi: Abi | None = None) -> str:
    """Source of ``pywasm_sdk/_abi.py``: the ABI's enums and names for the compiled-in SDK.

    The runtime cannot read YAML inside the proxy, so the constants are generated once and
    committed; ``tests/test_abi.py`` fails when the file and the YAML disagree.
    Regenerate with ``python -m pywasm_sdk.tooling.abi``.
    """
    abi = abi or load()
    out = [
        '"""The proxy-wasm ABI constants. GENERATED from abi/proxy_wasm.yaml: do not edit.',
        "",
        "Regenerate with ``python -m pywasm_sdk.tooling.abi``.",
        '"""',
        "",
        "from enum import IntEnum",
        "",
        f"ABI_VERSION = {abi.version!r}",
        "",
    ]
    for enum, members in abi.enums.items():
        out += ["", f"class {enum}(IntEnum):"]
        out += [f"    {name} = {value}" for name, value in members.items()]
        out.append("")
    out += ["", "#: every hostcall the host provides (the names the raw bindings must have)",
            "HOSTCALLS = ("]
    out += [f"    {name!r}," for name in abi.hostcalls]
    out += [")", "", "#: imports the build implements for the SDK (not hostcalls)", "SDK_IMPORTS = ("]
    out += [f"    {name!r}," for name in abi.sdk_imports]
    out += [")", "", "#: positions of the text (``string``) arguments of each raw import that has any",
            "TEXT_PARAMS = {"]
    for call in (*abi.hostcalls.values(), *abi.sdk_imports.values()):
        positions = tuple(i for i, p in enumerate(call.params) if p.type == "string")
        if positions:
            out.append(f"    {call.name!r}: {positions!r},")
    out += ["}", "", "#: every callback the host may call", "CALLBACKS = ("]
    out += [f"    {name!r}," for name in abi.callbacks]
    out += [")", "", "#: host limits of the wire formats"]
    out += [f"{k.upper()} = {v}" for k, v in abi.limits.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    target = resources.sdk_source_root() / "pywasm_sdk" / "_abi.py"
    target.write_text(runtime_module_source())
    print(f"wrote {target}")

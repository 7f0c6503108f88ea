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

import yaml  # type: ignore[import-untyped]  # no stubs in the test environment

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
    effect: str = ""  # one of HOSTCALL_EFFECTS, or "" (see abi/proxy_wasm.yaml)

    def core_signature(self) -> tuple[list[str], list[str]]:
        """proxy-wasm's signature: inputs, then one i32 pointer per output word, -> i32."""
        params = [t for p in self.params for t in p.core_types()]
        for out in self.returns:
            params += ["i32", "i32"] if out.type == "bytes" else ["i32"]
        return params, ["i32"]


#: what the bridge tracks of a hostcall (``effect`` in abi/proxy_wasm.yaml)
HOSTCALL_EFFECTS = ("effective_context", "starts_call")

#: the kinds of context a callback runs on, and what the values of ``awaits`` and ``export`` may be
CONTEXT_KINDS = ("root", "http", "tcp", "any")
AWAIT_KINDS = ("never", "detached")
EXPORT_KINDS = ("always", "overridden", "never")


@dataclass(frozen=True)
class Callback:
    """One ``proxy_on_*`` export the host may call, and what the SDK does with it."""

    name: str
    params: tuple[Param, ...]
    result: str | None  # None, "bool" or "action": the answer kind
    context: str  # one of CONTEXT_KINDS
    method: str  # the context method the SDK calls, "" when the SDK handles the callback itself
    awaits: str  # "never", "detached", or the StreamType name held while a coroutine awaits
    export: str  # one of EXPORT_KINDS

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


def _params(spec: dict[str, str] | None) -> tuple[Param, ...]:
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
        made = {name: Hostcall(name, _params(spec.get("params")), _params(spec.get("returns")),
                               spec.get("doc", ""), spec.get("effect", ""))
                for name, spec in raw.get(section, {}).items()}
        for call in made.values():
            if call.effect and call.effect not in HOSTCALL_EFFECTS:
                raise ValueError(f"abi/proxy_wasm.yaml: {call.name}: effect {call.effect!r} is not one of "
                                 f"{', '.join(HOSTCALL_EFFECTS)}")
            if call.effect == "effective_context" and [p.type for p in call.params] != ["u32"]:
                raise ValueError(f"abi/proxy_wasm.yaml: {call.name}: effective_context takes one u32 context_id")
        return made

    hostcalls, sdk_imports = calls("hostcalls"), calls("sdk_imports")
    callbacks = {
        name: Callback(name, _params(spec.get("params")), spec.get("result"), spec.get("context", ""),
                       spec.get("method", ""), spec.get("awaits", ""), spec.get("export", ""))
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
    for cb in callbacks.values():
        _check_callback(cb, abi.enums["StreamType"])
    return abi


def _check_callback(cb: Callback, stream_types: dict[str, int]) -> None:
    problems = []
    if cb.result not in (None, "bool", "action"):
        problems.append(f"result {cb.result!r} is not bool or action")
    if cb.context not in CONTEXT_KINDS:
        problems.append(f"context {cb.context!r} is not one of {', '.join(CONTEXT_KINDS)}")
    if cb.awaits not in AWAIT_KINDS and cb.awaits not in stream_types:
        problems.append(f"awaits {cb.awaits!r} is neither never, detached nor a StreamType")
    if cb.export not in EXPORT_KINDS:
        problems.append(f"export {cb.export!r} is not one of {', '.join(EXPORT_KINDS)}")
    if cb.export == "overridden" and not cb.method:
        problems.append("export: overridden needs the method that is overridden")
    if cb.awaits in stream_types and cb.result != "action":
        problems.append("only a callback that answers an action can hold its stream while it awaits")
    if problems:
        raise ValueError(f"abi/proxy_wasm.yaml: callback {cb.name}: {'; '.join(problems)}")


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
    out += [")", "",
            "",
            "class CallbackSpec:",
            '    """What the SDK does with one callback (see ``callbacks`` in abi/proxy_wasm.yaml)."""',
            "",
            '    __slots__ = ("name", "params", "result", "context", "method", "awaits", "export")',
            "",
            "    def __init__(self, name: str, params: tuple[tuple[str, str], ...], result: str | None,",
            "                 context: str, method: str, awaits: str, export: str) -> None:",
            "        self.name, self.params, self.result = name, params, result",
            "        self.context, self.method, self.awaits, self.export = context, method, awaits, export",
            "",
            "    def __repr__(self) -> str:",
            "        return f'CallbackSpec({self.name!r})'",
            "",
            "",
            "#: callback -> its parameters ((name, type) pairs), answer kind (None, 'bool', 'action'),",
            "#: context kind, SDK method, what awaiting means and when it is exported",
            "CALLBACK_SPECS = {"]
    for cb in abi.callbacks.values():
        params = tuple((p.name, p.type) for p in cb.params)
        out.append(f"    {cb.name!r}: CallbackSpec({cb.name!r}, {params!r}, {cb.result!r}, {cb.context!r}, "
                   f"{cb.method!r}, {cb.awaits!r}, {cb.export!r}),")
    out += ["}", "", "#: host limits of the wire formats"]
    out += [f"{k.upper()} = {v}" for k, v in abi.limits.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    target = resources.sdk_source_root() / "pywasm_sdk" / "_abi.py"
    target.write_text(runtime_module_source())
    print(f"wrote {target}")

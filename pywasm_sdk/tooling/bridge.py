"""The bridge module: ``build/bridge.wat`` plus what is generated from the ABI for one plugin.

Rule of this module: every function here is derived from ``abi/proxy_wasm.yaml``; the hand-
written part (start-up, helpers, the allocator) lives in ``build/bridge.wat``. Two kinds of
function are generated:

- one export per callback the plugin uses: its arguments become Python ints (``bool`` for the
  ABI's bool parameters), the Python entry is called with ``PyObject_Vectorcall`` and its answer
  converted back (an entry that fails answers the callback's documented default);
- one ``METH_FASTCALL`` builtin per raw hostcall (and SDK import): ints are converted with
  ``PyLong_As*``, ``bytes``/``str`` are passed as pointers into the objects themselves
  (``PyBytes_AsStringAndSize`` / ``PyUnicode_AsUTF8AndSize``: no copy, so nothing to free and
  nothing to leak; a ``bytes`` parameter takes a ``str`` too, as its UTF-8), outputs are read
  from a frame on the shadow stack and the host-allocated bytes freed as soon as they are a
  Python object. A wrong argument raises a Python exception
  (``TypeError``, ``OverflowError``, ``UnicodeEncodeError``) instead of trapping the VM.

The raw builtins are exported as ``raw:<name>``; the linker puts them in the function table and
writes their ``PyMethodDef`` records into the anchor. Python calls them in the order of
``hostcalls.RAW_NAMES`` (``_abi.HOSTCALLS`` then ``_abi.SDK_IMPORTS``).
"""

from __future__ import annotations

from . import abi as abi_mod
from . import resources

__all__ = ["IMPORTS_MARK", "RAW_EXPORT_PREFIX", "bridge_source", "callback_default",
           "raw_names"]

RAW_EXPORT_PREFIX = "raw:"
ENTRY_IMPORT_PREFIX = "entry:"
#: where generated imports go in build/bridge.wat (WAT requires imports before definitions)
IMPORTS_MARK = "  (global $ready"
_VECTORCALL_OFFSET = 0x80000000  # PY_VECTORCALL_ARGUMENTS_OFFSET on wasm32
_CORE = {"u32": "i32", "i32": "i32", "bool": "i32", "u64": "i64", "i64": "i64"}


def raw_names(abi: abi_mod.Abi) -> list[str]:
    """The raw hostcalls in the order Python receives them (hostcalls.RAW_NAMES)."""
    return [*abi.hostcalls, *abi.sdk_imports]


def callback_default(cb: abi_mod.Callback) -> int:
    """What a callback answers when its Python entry fails (see _dispatch's boundary table)."""
    if cb.result == "bool":
        return 1 if cb.name == "proxy_on_done" else 0
    return 0  # Action.CONTINUE


def bridge_source(abi: abi_mod.Abi, callbacks: list[str]) -> str:
    """The complete bridge module text for a plugin exporting ``callbacks``."""
    fixed = (resources.build_dir() / "bridge.wat").read_text()
    head, sep, body = fixed.partition(IMPORTS_MARK)
    if not sep:
        raise ValueError(f"build/bridge.wat has no {IMPORTS_MARK.strip()!r} to place imports before")
    end = body.rstrip().rfind(")")
    imports = [_host_import(call) for call in abi.hostcalls.values()]
    imports += [f'  (import "pywasm" "{ENTRY_IMPORT_PREFIX}{name}" (global $entry.{name} i32))'
                for name in callbacks]
    functions = [_callback_export(abi.callbacks[name]) for name in callbacks]
    functions += [_raw_function(call, f"$env.{call.name}") for call in abi.hostcalls.values()]
    functions += [_raw_function(call, f"$sdk.{call.name}") for call in abi.sdk_imports.values()]
    return (head + "\n".join(imports) + "\n\n" + sep + body[:end] + "\n".join(functions)
            + "\n" + body[end:])


def _host_import(call: abi_mod.Hostcall) -> str:
    params, results = call.core_signature()
    return (f'  (import "env" "{call.name}" (func $env.{call.name}'
            f'{"".join(f" (param {t})" for t in params)} (result {results[0]})))')


#: the callbacks of a context's life: the bridge keeps stream contexts in its own table and
#: enters Python only when the answer is 1 (build/bridge.wat, "stream contexts")
_LIFECYCLE = {"proxy_on_context_create": "(call $context_created (local.get $p0) (local.get $p1))",
              "proxy_on_delete": "(call $context_deleted (local.get $p0))"}


def _before_python(cb: abi_mod.Callback, results: list[str]) -> str:
    """What the export does before it enters Python: a lifecycle callback may not enter at all;
    a stream's callback first makes sure Python has the stream's context; a root's first hands
    Python the streams deleted since (their pending calls must be forgotten before a root
    callback delivers an answer to one)."""
    if cb.params[0].name not in ("context_id", "root_context_id"):
        raise ValueError(f"{cb.name}: a callback's first parameter must be its context's id")
    effective = "    (global.set $effective (local.get $p0))\n"  # hostcalls act on it until set
    if cb.name in _LIFECYCLE:
        if results:
            raise ValueError(f"{cb.name}: a lifecycle callback that answers cannot skip Python")
        return effective + f"    (if (i32.eqz {_LIFECYCLE[cb.name]}) (then (return)))"
    if cb.context == "root":
        return effective + "    (call $flush)"
    return effective + "    (call $reach (local.get $p0))"


def _callback_export(cb: abi_mod.Callback) -> str:
    params, results = cb.core_signature()
    names = [f"$p{i}" for i in range(len(params))]
    entry = f"(global.get $entry.{cb.name})"
    frame = (4 + 4 * len(cb.params) + 15) // 16 * 16
    out = [f'  (func (export "{cb.name}")'
           + "".join(f" (param {n} {t})" for n, t in zip(names, params))
           + (f" (result {results[0]})" if results else "")]
    out.append("    (local $args i32) (local $r i32) (local $ok i32)")
    out.append("    (call $ensure_ready)")
    out.append(_before_python(cb, results))
    out.append(f"    (local.set $args (i32.sub (global.get $sp) (i32.const {frame})))")
    out.append("    (global.set $sp (local.get $args))")
    out.append("    (local.set $ok (i32.const 1))")
    for i, (p, n) in enumerate(zip(cb.params, names)):
        convert = {"bool": "$PyBool_FromLong", "u32": "$PyLong_FromUnsignedLong",
                   "i32": "$PyLong_FromLong"}.get(p.type)
        if convert is None:
            raise ValueError(f"{cb.name}: parameter type {p.type} has no Python conversion")
        out.append(f"    (i32.store offset={4 + 4 * i} (local.get $args) (call {convert} (local.get {n})))")
        out.append(f"    (local.set $ok (i32.and (local.get $ok) (i32.ne (i32.load offset={4 + 4 * i} "
                   "(local.get $args)) (i32.const 0))))")
    nargsf = _VECTORCALL_OFFSET | len(cb.params)
    out.append(f"    (local.set $r (if (result i32) (local.get $ok) (then (call $PyObject_Vectorcall {entry} "
               f"(i32.add (local.get $args) (i32.const 4)) (i32.const {nargsf:#x}) (i32.const 0))) "
               "(else (i32.const 0))))")
    for i in range(len(cb.params)):
        out.append(f"    (call $Py_DecRef (i32.load offset={4 + 4 * i} (local.get $args)))")
    out.append(f"    (global.set $sp (i32.add (local.get $args) (i32.const {frame})))")
    if results:
        out.append(f"    (call $answer (local.get $r) {entry} (i32.const {callback_default(cb)})))")
    else:
        out.append(f"    (call $discard (local.get $r) {entry}))")
    return "\n".join(out)


def _all(conditions: list[str]) -> str:
    """The WAT conjunction of i32 conditions."""
    if len(conditions) == 1:
        return conditions[0]
    return f"(i32.and {conditions[0]} {_all(conditions[1:])})"


#: what the bridge records when a hostcall with an ``effect`` succeeded (build/bridge.wat)
_EFFECTS = {"effective_context": "(global.set $effective (local.get $a0))",
            "starts_call": "(call $call_started)"}


def _frame_layout(call: abi_mod.Hostcall) -> tuple[dict[str, int], dict[str, int], int]:
    """Offsets in the frame of each (ptr, len) argument temporary and of each output."""
    offset, args, outs = 0, {}, {}
    for p in call.params:
        if p.type in ("bytes", "string"):
            args[p.name] = offset
            offset += 8
    for r in call.returns:
        size = {"u32": 4, "u64": 8, "bytes": 8}[r.type]
        offset = (offset + size - 1) // size * size if size == 8 else offset
        outs[r.name] = offset
        offset += size
    return args, outs, (offset + 15) // 16 * 16 or 16


def _raw_function(call: abi_mod.Hostcall, callee: str) -> str:
    args_at, outs_at, frame = _frame_layout(call)
    n = len(call.params)
    out = [f'  (func (export "{RAW_EXPORT_PREFIX}{call.name}") (param $self i32) (param $args i32) '
           "(param $nargs i32) (result i32)"]
    locals_ = ["(local $f i32)", "(local $status i32)", "(local $res i32)"]
    for i, p in enumerate(call.params):
        if p.type in ("bytes", "string"):
            locals_ += [f"(local $p{i} i32)", f"(local $l{i} i32)"]
        else:
            locals_.append(f"(local $a{i} {_CORE[p.type]})")
    locals_ += [f"(local $o{j} i32)" for j in range(len(call.returns))]
    out.append("    " + " ".join(locals_))
    out.append(f"    (if (i32.ne (local.get $nargs) (i32.const {n})) (then (return (call $arity_error))))")
    out.append(f"    (local.set $f (i32.sub (global.get $sp) (i32.const {frame})))")
    out.append("    (global.set $sp (local.get $f))")
    out.append("    (block $fail")
    call_args = []
    for i, p in enumerate(call.params):
        arg = f"(i32.load offset={4 * i} (local.get $args))"
        if p.type == "bytes":
            at = args_at[p.name]
            out.append(f"      (br_if $fail (call $bytes_arg {arg} (i32.add (local.get $f) (i32.const {at}))))")
            out.append(f"      (local.set $p{i} (i32.load offset={at} (local.get $f)))")
            out.append(f"      (local.set $l{i} (i32.load offset={at + 4} (local.get $f)))")
            call_args += [f"(local.get $p{i})", f"(local.get $l{i})"]
        elif p.type == "string":
            at = args_at[p.name]
            out.append(f"      (local.set $p{i} (call $PyUnicode_AsUTF8AndSize {arg} "
                       f"(i32.add (local.get $f) (i32.const {at}))))")
            out.append(f"      (br_if $fail (i32.eqz (local.get $p{i})))")
            out.append(f"      (local.set $l{i} (i32.load offset={at} (local.get $f)))")
            call_args += [f"(local.get $p{i})", f"(local.get $l{i})"]
        else:
            fn, check = {"u32": ("$PyLong_AsUnsignedLong", "$failed"), "i32": ("$PyLong_AsLong", "$failed"),
                         "u64": ("$PyLong_AsUnsignedLongLong", "$failed64"),
                         "i64": ("$PyLong_AsLongLong", "$failed64")}[p.type]
            out.append(f"      (local.set $a{i} (call {fn} {arg}))")
            out.append(f"      (br_if $fail (call {check} (local.get $a{i})))")
            call_args.append(f"(local.get $a{i})")
    for r in call.returns:
        at = outs_at[r.name]
        if r.type == "u64":
            out.append(f"      (i64.store offset={at} (local.get $f) (i64.const 0))")
        else:
            out.append(f"      (i32.store offset={at} (local.get $f) (i32.const 0))")
            if r.type == "bytes":
                out.append(f"      (i32.store offset={at + 4} (local.get $f) (i32.const 0))")
        call_args.append(f"(i32.add (local.get $f) (i32.const {at}))")
        if r.type == "bytes":
            call_args.append(f"(i32.add (local.get $f) (i32.const {at + 4}))")
    out.append(f"      (local.set $status (call {callee} {' '.join(call_args)}))")
    if call.effect:
        out.append(f"      (if (i32.eqz (local.get $status)) (then {_EFFECTS[call.effect]}))")
    if not call.returns:
        out.append("      (local.set $res (call $PyLong_FromLong (local.get $status)))")
    else:
        # every output becomes an object first, so host buffers are freed whatever fails next
        for j, r in enumerate(call.returns):
            at = outs_at[r.name]
            make = {"u32": f"(call $PyLong_FromUnsignedLong (i32.load offset={at} (local.get $f)))",
                    "u64": f"(call $PyLong_FromUnsignedLongLong (i64.load offset={at} (local.get $f)))",
                    "bytes": f"(call $take_bytes (i32.load offset={at} (local.get $f)) "
                             f"(i32.load offset={at + 4} (local.get $f)))"}[r.type]
            out.append(f"      (local.set $o{j} {make})")
        outs = [f"$o{j}" for j in range(len(call.returns))]
        made = _all([f"(i32.ne (local.get {o}) (i32.const 0))" for o in outs])
        release = " ".join(f"(call $Py_DecRef (local.get {o}))" for o in outs)
        out.append(f"      (if (i32.eqz {made}) (then {release} (br $fail)))")
        out.append(f"      (local.set $res (call $PyTuple_New (i32.const {1 + len(outs)})))")
        out.append(f"      (if (i32.eqz (local.get $res)) (then {release} (br $fail)))")
        out.append("      (drop (call $PyTuple_SetItem (local.get $res) (i32.const 0) "
                   "(call $PyLong_FromLong (local.get $status))))")
        for j, o in enumerate(outs):
            out.append(f"      (drop (call $PyTuple_SetItem (local.get $res) (i32.const {j + 1}) (local.get {o})))")
    out.append(f"      (global.set $sp (i32.add (local.get $f) (i32.const {frame})))")
    out.append("      (return (local.get $res)))")
    out.append(f"    (global.set $sp (i32.add (local.get $f) (i32.const {frame})))")
    out.append("    (i32.const 0))")
    return "\n".join(out)

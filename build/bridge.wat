;; The bridge between the proxy and the pre-initialised CPython: the fixed part.
;;
;; The linker appends generated functions to this module (pywasm_sdk/tooling/bridge.py, from
;; abi/proxy_wasm.yaml): one `proxy_on_*` export per callback the plugin uses, which calls its
;; Python entry with PyObject_Vectorcall, and one METH_FASTCALL builtin function per raw hostcall,
;; which converts its arguments with the C API and calls `env.proxy_*` with pointers into the
;; Python objects themselves: nothing is copied or allocated to pass an argument.
;;
;; Imports from "fused" are functions and globals the componentized interpreter exports (CPython's
;; C API, libc's allocator, the shadow stack pointer), found by export name and checked for their
;; type. A data symbol such as PyExc_TypeError is the global holding its absolute address (the
;; dynamic linker's resolved entry, a mutable global); load it to get the PyObject*. Imports from "pywasm" are constants the linker computes from the snapshot (addresses in
;; the anchor, see pywasm_sdk/_bridge.py).
;;
;; The thread state: componentize-py's runtime released it after pre-initialisation and took it
;; again on every call. The bridge takes it once, on the first entry, and never releases it: a
;; proxy-wasm VM has exactly one thread.
(module
  (import "fused" "memory" (memory 0))
  (import "fused" "__stack_pointer" (global $sp (mut i32)))
  (import "fused" "malloc" (func $malloc (param i32) (result i32)))
  (import "fused" "free" (func $free (param i32)))
  (import "fused" "PyGILState_Ensure" (func $PyGILState_Ensure (result i32)))
  (import "fused" "PyCFunction_NewEx" (func $PyCFunction_NewEx (param i32 i32 i32) (result i32)))
  (import "fused" "PyTuple_New" (func $PyTuple_New (param i32) (result i32)))
  (import "fused" "PyTuple_SetItem" (func $PyTuple_SetItem (param i32 i32 i32) (result i32)))
  (import "fused" "PyObject_Vectorcall" (func $PyObject_Vectorcall (param i32 i32 i32 i32) (result i32)))
  (import "fused" "Py_DecRef" (func $Py_DecRef (param i32)))
  (import "fused" "PyErr_Occurred" (func $PyErr_Occurred (result i32)))
  (import "fused" "PyErr_Clear" (func $PyErr_Clear))
  (import "fused" "PyErr_SetString" (func $PyErr_SetString (param i32 i32)))
  (import "fused" "PyErr_WriteUnraisable" (func $PyErr_WriteUnraisable (param i32)))
  (import "fused" "PyExc_TypeError" (global $PyExc_TypeError (mut i32)))
  (import "fused" "PyExc_ImportError" (global $PyExc_ImportError (mut i32)))
  (import "fused" "PyUnicode_Type" (global $PyUnicode_Type (mut i32)))  ;; the type itself: no load
  (import "fused" "PyLong_FromLong" (func $PyLong_FromLong (param i32) (result i32)))
  (import "fused" "PyLong_FromUnsignedLong" (func $PyLong_FromUnsignedLong (param i32) (result i32)))
  (import "fused" "PyLong_FromUnsignedLongLong" (func $PyLong_FromUnsignedLongLong (param i64) (result i32)))
  (import "fused" "PyLong_AsLong" (func $PyLong_AsLong (param i32) (result i32)))
  (import "fused" "PyLong_AsUnsignedLong" (func $PyLong_AsUnsignedLong (param i32) (result i32)))
  (import "fused" "PyLong_AsLongLong" (func $PyLong_AsLongLong (param i32) (result i64)))
  (import "fused" "PyLong_AsUnsignedLongLong" (func $PyLong_AsUnsignedLongLong (param i32) (result i64)))
  (import "fused" "PyBool_FromLong" (func $PyBool_FromLong (param i32) (result i32)))
  (import "fused" "PyBytes_AsStringAndSize" (func $PyBytes_AsStringAndSize (param i32 i32 i32) (result i32)))
  (import "fused" "PyBytes_FromStringAndSize" (func $PyBytes_FromStringAndSize (param i32 i32) (result i32)))
  (import "fused" "PyUnicode_AsUTF8AndSize" (func $PyUnicode_AsUTF8AndSize (param i32 i32) (result i32)))
  (import "fused" "PyList_New" (func $PyList_New (param i32) (result i32)))
  (import "fused" "PyList_Append" (func $PyList_Append (param i32 i32) (result i32)))
  (import "fused" "PyList_Size" (func $PyList_Size (param i32) (result i32)))

  (import "pywasm" "bind" (global $bind i32))              ;; the PyObject* of _bridge.bind
  (import "pywasm" "raw_defs" (global $raw_defs i32))      ;; PyMethodDef[raw_count] in the anchor
  (import "pywasm" "raw_count" (global $raw_count i32))
  (import "pywasm" "arity_message" (global $arity_message i32))  ;; C strings in the anchor
  (import "pywasm" "module_message" (global $module_message i32))
  (import "pywasm" "compiler_message" (global $compiler_message i32))
  (import "pywasm" "create_stream_context" (global $create_stream_context i32))  ;; PyObject*
  (import "pywasm" "forget_contexts" (global $forget_contexts i32))              ;; PyObject*
  (import "pywasm" "eager_delete" (global $eager_delete i32))  ;; 1: streams override on_delete

  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))

  (global $ready (mut i32) (i32.const 0))

  ;; Called first thing by every export. The first call attaches the thread state for good and
  ;; hands the raw hostcalls to Python.
  (func $ensure_ready
    (if (i32.eqz (global.get $ready))
      (then (global.set $ready (i32.const 1)) (call $init))))

  (func $init
    (local $tuple i32) (local $i i32) (local $fn i32) (local $args i32) (local $r i32)
    (drop (call $PyGILState_Ensure))
    (local.set $tuple (call $PyTuple_New (global.get $raw_count)))
    (if (i32.eqz (local.get $tuple)) (then (call $PyErr_WriteUnraisable (i32.const 0)) (return)))
    (block $made
      (loop $next
        (br_if $made (i32.ge_u (local.get $i) (global.get $raw_count)))
        (local.set $fn (call $PyCFunction_NewEx
          (i32.add (global.get $raw_defs) (i32.shl (local.get $i) (i32.const 4)))
          (i32.const 0) (i32.const 0)))
        (if (i32.eqz (local.get $fn))
          (then (call $Py_DecRef (local.get $tuple)) (call $PyErr_WriteUnraisable (i32.const 0)) (return)))
        (drop (call $PyTuple_SetItem (local.get $tuple) (local.get $i) (local.get $fn)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; bind(tuple): one argument, with the slot before it free for the callee's use
    (local.set $args (i32.sub (global.get $sp) (i32.const 16)))
    (global.set $sp (local.get $args))
    (i32.store offset=4 (local.get $args) (local.get $tuple))
    (local.set $r (call $PyObject_Vectorcall (global.get $bind) (i32.add (local.get $args) (i32.const 4))
                                             (i32.const 0x80000001) (i32.const 0)))
    (global.set $sp (i32.add (local.get $args) (i32.const 16)))
    (call $Py_DecRef (local.get $tuple))
    (if (local.get $r)
      (then (call $Py_DecRef (local.get $r)))
      (else (call $PyErr_WriteUnraisable (global.get $bind)))))

  ;; proxy_on_memory_allocate: how the host hands data to the plugin (libc's malloc; the raw
  ;; hostcalls free what they received once it is a Python object).
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (call $malloc (local.get $size)))

  (func (export "proxy_abi_version_0_2_1"))

  ;; A Python callable's answer, or the default when the call failed or answered nonsense.
  ;; Consumes the reference to $r; a failure is reported (sys.unraisablehook reaches the log).
  (func $answer (param $r i32) (param $callable i32) (param $default i32) (result i32)
    (local $v i32)
    (if (i32.eqz (local.get $r))
      (then (call $PyErr_WriteUnraisable (local.get $callable)) (return (local.get $default))))
    (local.set $v (call $PyLong_AsLong (local.get $r)))
    (call $Py_DecRef (local.get $r))
    (if (i32.and (i32.eq (local.get $v) (i32.const -1)) (i32.ne (call $PyErr_Occurred) (i32.const 0)))
      (then (call $PyErr_WriteUnraisable (local.get $callable)) (return (local.get $default))))
    (local.get $v))

  ;; Like $answer for callbacks that answer nothing.
  (func $discard (param $r i32) (param $callable i32)
    (if (local.get $r)
      (then (call $Py_DecRef (local.get $r)))
      (else (call $PyErr_WriteUnraisable (local.get $callable)))))

;; -- stream contexts, without entering Python -----------------------------------------------
  ;;
  ;; Envoy creates and deletes a context per request; entering Python for each would cost two
  ;; calls into the interpreter per request. Instead the bridge records each stream's root here
  ;; and Python makes the stream's context at its first callback (the SDK's runtime does that by
  ;; itself when the VM has one root context; with several, the bridge first calls
  ;; create_stream_context(id, root)). Deleted streams are handed to forget_contexts in
  ;; batches (at once when the plugin's streams override on_delete); a stream that never reached
  ;; Python is just dropped. Roots go to Python as they come.
  ;;
  ;; A stream that started a call or a stream of its own (an answer will come back for it) is
  ;; marked EAGER: its delete goes to Python as it comes, so the SDK cancels what waits for it
  ;; then, not a batch later. The bridge knows which context a hostcall acts on: the callback's,
  ;; until Python calls proxy_set_effective_context.
  ;;
  ;; The table: open addressing with linear probing, 8-byte entries (id, root | MADE | EAGER),
  ;; context ids are never 0 (Envoy counts from 1) so 0 marks a free entry; deletion shifts the
  ;; entries after it back (no tombstones). Roots are entries whose root is 0.
  (global $contexts (mut i32) (i32.const 0))  ;; the entries
  (global $capacity (mut i32) (i32.const 0))  ;; a power of two
  (global $used (mut i32) (i32.const 0))
  (global $roots (mut i32) (i32.const 0))     ;; live root contexts
  (global $last_root (mut i32) (i32.const 0))
  (global $gone (mut i32) (i32.const 0))      ;; list of deleted streams Python has not forgotten
  (global $MADE i32 (i32.const 0x80000000))
  (global $EAGER i32 (i32.const 0x40000000))
  (global $ROOT_BITS i32 (i32.const 0x3FFFFFFF))
  (global $effective (mut i32) (i32.const 0))  ;; the context hostcalls act on now
  (global $BATCH i32 (i32.const 32))

  (func $home (param $id i32) (result i32)  ;; the index an id hashes to
    (i32.and (i32.mul (local.get $id) (i32.const 0x9E3779B1)) (i32.sub (global.get $capacity) (i32.const 1))))

  ;; The address of id's entry, or of the free entry where it would go.
  (func $entry (param $id i32) (result i32)
    (local $i i32) (local $at i32)
    (local.set $i (call $home (local.get $id)))
    (loop $probe
      (local.set $at (i32.add (global.get $contexts) (i32.shl (local.get $i) (i32.const 3))))
      (if (i32.and (i32.ne (i32.load (local.get $at)) (local.get $id)) (i32.ne (i32.load (local.get $at)) (i32.const 0)))
        (then
          (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (i32.sub (global.get $capacity) (i32.const 1))))
          (br $probe))))
    (local.get $at))

  (func $grow
    (local $old i32) (local $old_capacity i32) (local $i i32) (local $at i32) (local $to i32)
    (local.set $old (global.get $contexts))
    (local.set $old_capacity (global.get $capacity))
    (global.set $capacity (select (i32.shl (local.get $old_capacity) (i32.const 1)) (i32.const 64)
                                  (local.get $old_capacity)))
    (global.set $contexts (call $malloc (i32.shl (global.get $capacity) (i32.const 3))))
    (if (i32.eqz (global.get $contexts)) (then unreachable))  ;; no memory left for 8 bytes a stream
    (memory.fill (global.get $contexts) (i32.const 0) (i32.shl (global.get $capacity) (i32.const 3)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $old_capacity)))
        (local.set $at (i32.add (local.get $old) (i32.shl (local.get $i) (i32.const 3))))
        (if (i32.load (local.get $at))
          (then
            (local.set $to (call $entry (i32.load (local.get $at))))
            (i64.store (local.get $to) (i64.load (local.get $at)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (local.get $old) (then (call $free (local.get $old)))))

  (func $remember (param $id i32) (param $root i32)
    (local $at i32)
    (if (i32.ge_u (i32.shl (i32.add (global.get $used) (i32.const 1)) (i32.const 1)) (global.get $capacity))
      (then (call $grow)))
    (local.set $at (call $entry (local.get $id)))
    (if (i32.eqz (i32.load (local.get $at))) (then (global.set $used (i32.add (global.get $used) (i32.const 1)))))
    (i32.store (local.get $at) (local.get $id))
    (i32.store offset=4 (local.get $at) (local.get $root)))

  ;; Forget id's entry; answers what it held (root | MADE | EAGER), or -1 when there was none.
  (func $forget (param $id i32) (result i32)
    (local $at i32) (local $held i32) (local $i i32) (local $j i32) (local $home i32) (local $mask i32)
    (if (i32.eqz (global.get $capacity)) (then (return (i32.const -1))))
    (local.set $at (call $entry (local.get $id)))
    (if (i32.eqz (i32.load (local.get $at))) (then (return (i32.const -1))))
    (local.set $held (i32.load offset=4 (local.get $at)))
    (local.set $mask (i32.sub (global.get $capacity) (i32.const 1)))
    (local.set $i (i32.shr_u (i32.sub (local.get $at) (global.get $contexts)) (i32.const 3)))
    (local.set $j (local.get $i))
    ;; shift back the entries that probed past the freed one
    (block $done
      (loop $next
        (local.set $j (i32.and (i32.add (local.get $j) (i32.const 1)) (local.get $mask)))
        (local.set $at (i32.add (global.get $contexts) (i32.shl (local.get $j) (i32.const 3))))
        (br_if $done (i32.eqz (i32.load (local.get $at))))
        (local.set $home (call $home (i32.load (local.get $at))))
        ;; the entry at j moves back to i unless its home lies cyclically in (i, j]
        (if (i32.ge_u (i32.and (i32.sub (local.get $j) (local.get $home)) (local.get $mask))
                      (i32.and (i32.sub (local.get $j) (local.get $i)) (local.get $mask)))
          (then
            (i64.store (i32.add (global.get $contexts) (i32.shl (local.get $i) (i32.const 3)))
                       (i64.load (local.get $at)))
            (local.set $i (local.get $j))))
        (br $next)))
    (i64.store (i32.add (global.get $contexts) (i32.shl (local.get $i) (i32.const 3))) (i64.const 0))
    (global.set $used (i32.sub (global.get $used) (i32.const 1)))
    (local.get $held))

  ;; Before a stream's callback enters Python: the first time, and when the runtime cannot
  ;; tell the stream's root by itself, make its context with the root it was created under.
  (func $reach (param $id i32)
    (local $at i32) (local $held i32)
    (if (i32.eqz (global.get $capacity)) (then (return)))
    (local.set $at (call $entry (local.get $id)))
    (if (i32.eqz (i32.load (local.get $at))) (then (return)))
    (local.set $held (i32.load offset=4 (local.get $at)))
    ;; made already, or a root (its context was made when it was created)
    (if (i32.or (i32.and (local.get $held) (global.get $MADE)) (i32.eqz (local.get $held))) (then (return)))
    (i32.store offset=4 (local.get $at) (i32.or (local.get $held) (global.get $MADE)))
    (if (i32.and (i32.eq (global.get $roots) (i32.const 1)) (i32.eq (local.get $held) (global.get $last_root)))
      (then (return)))
    (call $call2 (global.get $create_stream_context) (local.get $id) (local.get $held)))

  ;; proxy_on_context_create: roots enter Python now, streams are only remembered.
  (func $context_created (param $id i32) (param $parent i32) (result i32)  ;; 1: enter Python
    (call $remember (local.get $id) (local.get $parent))
    (if (local.get $parent) (then (return (i32.const 0))))
    (global.set $roots (i32.add (global.get $roots) (i32.const 1)))
    (global.set $last_root (local.get $id))
    (i32.const 1))

  ;; proxy_on_delete: 1 when Python must see it now (a root, an unknown id, or a stream of a
  ;; plugin that overrides on_delete); a stream that reached Python waits in a batch.
  (func $context_deleted (param $id i32) (result i32)
    (local $held i32) (local $n i32)
    (local.set $held (call $forget (local.get $id)))
    (if (i32.eq (local.get $held) (i32.const -1)) (then (return (i32.const 1))))
    (if (i32.eqz (i32.and (local.get $held) (global.get $ROOT_BITS)))
      (then (global.set $roots (i32.sub (global.get $roots) (i32.const 1))) (return (i32.const 1))))
    (if (i32.eqz (i32.and (local.get $held) (global.get $MADE))) (then (return (i32.const 0))))
    (if (i32.or (global.get $eager_delete) (i32.and (local.get $held) (global.get $EAGER)))
      (then (return (i32.const 1))))
    (if (i32.eqz (global.get $gone)) (then (global.set $gone (call $PyList_New (i32.const 0)))))
    (local.set $n (call $PyLong_FromUnsignedLong (local.get $id)))
    (if (i32.or (i32.eqz (global.get $gone)) (i32.eqz (local.get $n)))
      (then (call $Py_DecRef (local.get $n)) (call $PyErr_Clear) (return (i32.const 1))))
    (drop (call $PyList_Append (global.get $gone) (local.get $n)))
    (call $Py_DecRef (local.get $n))
    (if (i32.ge_u (call $PyList_Size (global.get $gone)) (global.get $BATCH)) (then (call $flush)))
    (i32.const 0))

  ;; A call or gRPC stream was started for the effective context: if it is a stream, deliver
  ;; its delete as it comes.
  (func $call_started
    (local $at i32) (local $held i32)
    (if (i32.eqz (global.get $capacity)) (then (return)))
    (local.set $at (call $entry (global.get $effective)))
    (if (i32.ne (i32.load (local.get $at)) (global.get $effective)) (then (return)))
    (local.set $held (i32.load offset=4 (local.get $at)))
    (if (i32.and (local.get $held) (global.get $ROOT_BITS))
      (then (i32.store offset=4 (local.get $at) (i32.or (local.get $held) (global.get $EAGER))))))

  ;; Hand the batch of deleted streams to Python (forget_contexts) and start a new one.
  (func $flush
    (local $batch i32) (local $args i32) (local $r i32)
    (local.set $batch (global.get $gone))
    (if (i32.eqz (local.get $batch)) (then (return)))
    (global.set $gone (i32.const 0))
    (local.set $args (i32.sub (global.get $sp) (i32.const 16)))
    (global.set $sp (local.get $args))
    (i32.store offset=4 (local.get $args) (local.get $batch))
    (local.set $r (call $PyObject_Vectorcall (global.get $forget_contexts) (i32.add (local.get $args) (i32.const 4))
                                             (i32.const 0x80000001) (i32.const 0)))
    (global.set $sp (i32.add (local.get $args) (i32.const 16)))
    (call $Py_DecRef (local.get $batch))
    (call $discard (local.get $r) (global.get $forget_contexts)))

  ;; callable(a, b) for two u32 arguments, its result discarded (failures reported).
  (func $call2 (param $callable i32) (param $a i32) (param $b i32)
    (local $args i32) (local $r i32)
    (local.set $args (i32.sub (global.get $sp) (i32.const 16)))
    (global.set $sp (local.get $args))
    (i32.store offset=4 (local.get $args) (call $PyLong_FromUnsignedLong (local.get $a)))
    (i32.store offset=8 (local.get $args) (call $PyLong_FromUnsignedLong (local.get $b)))
    (local.set $r (if (result i32) (i32.and (i32.ne (i32.load offset=4 (local.get $args)) (i32.const 0))
                                          (i32.ne (i32.load offset=8 (local.get $args)) (i32.const 0)))
      (then (call $PyObject_Vectorcall (local.get $callable) (i32.add (local.get $args) (i32.const 4))
                                       (i32.const 0x80000002) (i32.const 0)))
      (else (i32.const 0))))
    (call $Py_DecRef (i32.load offset=4 (local.get $args)))
    (call $Py_DecRef (i32.load offset=8 (local.get $args)))
    (global.set $sp (i32.add (local.get $args) (i32.const 16)))
    (call $discard (local.get $r) (local.get $callable)))

  ;; TypeError for a raw hostcall called with the wrong number of arguments; returns NULL.
  (func $arity_error (result i32)
    (call $PyErr_SetString (i32.load (global.get $PyExc_TypeError)) (global.get $arity_message))
    (i32.const 0))

  ;; What the linker puts where it removed code (pywasm_sdk/tooling/prune.py): the PyInit
  ;; function of a builtin module the plugin never imported, and the body of each entry point
  ;; into CPython's parser and compiler. Both answer NULL with an ImportError, as those C
  ;; functions answer NULL with an exception on failure. ImportError for the compiler too:
  ;; what is missing is a part of CPython, and the standard library treats ImportError as
  ;; "not available here" (traceback, for one, computes its carets with ast.parse and falls
  ;; back without them on ImportError).
  (func (export "pywasm:module_unavailable") (result i32)
    (call $PyErr_SetString (i32.load (global.get $PyExc_ImportError)) (global.get $module_message))
    (i32.const 0))
  (func (export "pywasm:compiler_unavailable") (result i32)
    (call $PyErr_SetString (i32.load (global.get $PyExc_ImportError)) (global.get $compiler_message))
    (i32.const 0))

  ;; A `bytes` argument of a raw hostcall: a bytes object, or an exact str passed as its UTF-8
  ;; (what the SDK has in hand for header names and values; no bytes object is made for it).
  ;; Writes (pointer, length) at $at; answers 1 with an exception set when the object is
  ;; neither, or is a str that has no UTF-8 form (lone surrogates: UnicodeEncodeError), which
  ;; the SDK's wrappers then convert themselves (pywasm_sdk.wire.to_bytes). ob_type is the
  ;; word after ob_refcnt.
  (func $bytes_arg (param $o i32) (param $at i32) (result i32)
    (local $p i32)
    (if (i32.eq (i32.load offset=4 (local.get $o)) (global.get $PyUnicode_Type))
      (then
        (local.set $p (call $PyUnicode_AsUTF8AndSize (local.get $o) (i32.add (local.get $at) (i32.const 4))))
        (i32.store (local.get $at) (local.get $p))
        (return (i32.eqz (local.get $p)))))
    (i32.ne (call $PyBytes_AsStringAndSize (local.get $o) (local.get $at) (i32.add (local.get $at) (i32.const 4)))
            (i32.const 0)))

  ;; True when a C API conversion returned its error value and set an exception.
  (func $failed (param $v i32) (result i32)
    (i32.and (i32.eq (local.get $v) (i32.const -1)) (i32.ne (call $PyErr_Occurred) (i32.const 0))))
  (func $failed64 (param $v i64) (result i32)
    (i32.and (i64.eq (local.get $v) (i64.const -1)) (i32.ne (call $PyErr_Occurred) (i32.const 0))))

  ;; Bytes the host allocated, as a Python bytes object; the host's buffer is freed whatever
  ;; happens (NULL with MemoryError when the object cannot be made).
  (func $take_bytes (param $ptr i32) (param $len i32) (result i32)
    (local $obj i32)
    (local.set $obj (call $PyBytes_FromStringAndSize (local.get $ptr) (local.get $len)))
    (if (local.get $ptr) (then (call $free (local.get $ptr))))
    (local.get $obj))

  ;; pywasm_environ (an SDK import, abi/proxy_wasm.yaml): Envoy's vm_config environment as
  ;; "K=V\0" entries, through the two WASI functions every Envoy provides. Same convention as a
  ;; hostcall with one bytes output: status, and (ptr, len) written through the out-pointers.
  (func $sdk.pywasm_environ (param $ptr_out i32) (param $len_out i32) (result i32)
    (local $count i32) (local $size i32) (local $pointers i32) (local $data i32) (local $frame i32)
    (local.set $frame (i32.sub (global.get $sp) (i32.const 16)))
    (global.set $sp (local.get $frame))
    (drop (call $environ_sizes_get (local.get $frame) (i32.add (local.get $frame) (i32.const 4))))
    (local.set $count (i32.load (local.get $frame)))
    (local.set $size (i32.load offset=4 (local.get $frame)))
    (global.set $sp (i32.add (local.get $frame) (i32.const 16)))
    (local.set $pointers (call $malloc (i32.shl (i32.add (local.get $count) (i32.const 1)) (i32.const 2))))
    (local.set $data (call $malloc (i32.add (local.get $size) (i32.const 1))))
    (drop (call $environ_get (local.get $pointers) (local.get $data)))
    (call $free (local.get $pointers))
    (i32.store (local.get $ptr_out) (local.get $data))
    (i32.store (local.get $len_out) (local.get $size))
    (i32.const 0))
)

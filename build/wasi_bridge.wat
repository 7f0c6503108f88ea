;; WASI 0.2 functions bridged onto what Envoy provides.
;;
;; `componentize-py --stub-wasi` replaces every WASI 0.2 import of the component with a function
;; that traps. CPython still calls a few of them at run time (clocks for `time`, random bytes for
;; `os.urandom`, stdout/stderr when C code writes there, preopens when a file is opened, poll for
;; `time.sleep`), and a trap kills the plugin's VM. The linker puts each function below in the
;; slot of the import named by its export (the wit-bindgen trampoline that calls that slot), so
;; these calls reach the 15 `wasi_snapshot_preview1` functions every Envoy has, or answer the way
;; a sandbox without files would. Whatever is not bridged here keeps trapping (sockets, exit).
;;
;; Imports from module "fused" are functions of the componentized plugin, found by export name.
;; Layouts of results are the canonical ABI's: result<T, E> is a u8 discriminant followed by the
;; payload at T's alignment; list<T> is (ptr, len); option<T> is a u8 discriminant.
(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "fused" "malloc" (func $malloc (param i32) (result i32)))
  (import "fused" "free" (func $free (param i32)))
  (import "fused" "memory" (memory 0))

  ;; 16 bytes of scratch for out-parameters, allocated on first use (nothing here re-enters).
  (global $scratch (mut i32) (i32.const 0))
  (func $scratch (result i32)
    (if (i32.eqz (global.get $scratch))
      (then (global.set $scratch (call $malloc (i32.const 16)))))
    (global.get $scratch))

  (func $clock_ns (param $clock i32) (result i64)
    (drop (call $clock_time_get (local.get $clock) (i64.const 1) (call $scratch)))
    (i64.load (call $scratch)))

  ;; wasi:clocks/monotonic-clock.now: func() -> instant (u64 ns)
  (func (export "__wasm_import_monotonic_clock_now") (result i64)
    (call $clock_ns (i32.const 1)))
  ;; wasi:clocks/monotonic-clock.resolution: func() -> duration
  (func (export "__wasm_import_monotonic_clock_resolution") (result i64)
    (i64.const 1000))
  ;; wasi:clocks/wall-clock.now: func() -> datetime {seconds: u64, nanoseconds: u32}
  (func (export "__wasm_import_wall_clock_now") (param $ret i32)
    (local $ns i64)
    (local.set $ns (call $clock_ns (i32.const 0)))
    (i64.store (local.get $ret) (i64.div_u (local.get $ns) (i64.const 1000000000)))
    (i32.store offset=8 (local.get $ret) (i32.wrap_i64 (i64.rem_u (local.get $ns) (i64.const 1000000000)))))
  ;; wasi:clocks/wall-clock.resolution: func() -> datetime
  (func (export "__wasm_import_wall_clock_resolution") (param $ret i32)
    (i64.store (local.get $ret) (i64.const 0))
    (i32.store offset=8 (local.get $ret) (i32.const 1000)))
  ;; wasi:clocks/monotonic-clock.subscribe-duration / subscribe-instant: -> pollable.
  ;; Envoy's poll_oneoff never sleeps either; a pollable here is always ready.
  (func (export "__wasm_import_monotonic_clock_subscribe_duration") (param i64) (result i32)
    (i32.const 1))
  (func (export "__wasm_import_monotonic_clock_subscribe_instant") (param i64) (result i32)
    (i32.const 1))
  (func (export "__wasm_import_poll_method_pollable_block") (param i32))
  (func (export "__wasm_import_poll_pollable_drop") (param i32))
  ;; wasi:io/poll.poll: func(in: list<borrow<pollable>>) -> list<u32>: every pollable is ready.
  (func (export "__wasm_import_poll_poll") (param $ptr i32) (param $len i32) (param $ret i32)
    (local $out i32) (local $i i32)
    (local.set $out (call $malloc (i32.shl (local.get $len) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2))) (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $ret) (local.get $out))
    (i32.store offset=4 (local.get $ret) (local.get $len)))

  ;; wasi:random/random.get-random-bytes: func(len: u64) -> list<u8>.
  ;; Envoy's random_get gives at most 64 KiB per call.
  (func (export "__wasm_import_random_get_random_bytes") (param $len64 i64) (param $ret i32)
    (local $len i32) (local $out i32) (local $done i32) (local $chunk i32)
    (local.set $len (i32.wrap_i64 (local.get $len64)))
    (local.set $out (call $malloc (local.get $len)))
    (block $exit
      (loop $more
        (br_if $exit (i32.ge_u (local.get $done) (local.get $len)))
        (local.set $chunk (i32.sub (local.get $len) (local.get $done)))
        (if (i32.gt_u (local.get $chunk) (i32.const 65536))
          (then (local.set $chunk (i32.const 65536))))
        (drop (call $random_get (i32.add (local.get $out) (local.get $done)) (local.get $chunk)))
        (local.set $done (i32.add (local.get $done) (local.get $chunk)))
        (br $more)))
    (i32.store (local.get $ret) (local.get $out))
    (i32.store offset=4 (local.get $ret) (local.get $len)))

  ;; wasi:cli/stdin|stdout|stderr: the stream handles are the preview-1 file descriptors.
  (func (export "__wasm_import_stdin_get_stdin") (result i32) (i32.const 0))
  (func (export "__wasm_import_stdout_get_stdout") (result i32) (i32.const 1))
  (func (export "__wasm_import_stderr_get_stderr") (result i32) (i32.const 2))
  ;; wasi:cli/terminal-*.get-terminal-*: option<terminal> = none
  (func (export "__wasm_import_terminal_stdin_get_terminal_stdin") (param $ret i32)
    (i32.store8 (local.get $ret) (i32.const 0)))
  (func (export "__wasm_import_terminal_stdout_get_terminal_stdout") (param $ret i32)
    (i32.store8 (local.get $ret) (i32.const 0)))
  (func (export "__wasm_import_terminal_stderr_get_terminal_stderr") (param $ret i32)
    (i32.store8 (local.get $ret) (i32.const 0)))
  (func (export "__wasm_import_terminal_input_terminal_input_drop") (param i32))
  (func (export "__wasm_import_terminal_output_terminal_output_drop") (param i32))
  (func (export "__wasm_import_streams_input_stream_drop") (param i32))
  (func (export "__wasm_import_streams_output_stream_drop") (param i32))
  ;; wasi:io/streams.input-stream.read: -> result<list<u8>, stream-error> = err(closed): stdin is empty.
  (func (export "__wasm_import_streams_method_input_stream_read") (param i32) (param i64) (param $ret i32)
    (i32.store8 (local.get $ret) (i32.const 1))
    (i32.store8 offset=4 (local.get $ret) (i32.const 1)))
  ;; wasi:io/streams.output-stream.check-write: -> result<u64, stream-error> = ok(64 KiB)
  (func (export "__wasm_import_streams_method_output_stream_check_write") (param i32) (param $ret i32)
    (i32.store8 (local.get $ret) (i32.const 0))
    (i64.store offset=8 (local.get $ret) (i64.const 65536)))
  ;; wasi:io/streams.output-stream.write: Envoy logs fd 1 at info and fd 2 at error.
  (func (export "__wasm_import_streams_method_output_stream_write")
        (param $fd i32) (param $ptr i32) (param $len i32) (param $ret i32)
    (local $iov i32)
    (local.set $iov (call $scratch))
    (i32.store (local.get $iov) (local.get $ptr))
    (i32.store offset=4 (local.get $iov) (local.get $len))
    (drop (call $fd_write (local.get $fd) (local.get $iov) (i32.const 1) (i32.add (local.get $iov) (i32.const 8))))
    (i32.store8 (local.get $ret) (i32.const 0)))
  ;; wasi:io/streams.output-stream.blocking-flush: -> result<_, stream-error> = ok
  (func (export "__wasm_import_streams_method_output_stream_blocking_flush") (param i32) (param $ret i32)
    (i32.store8 (local.get $ret) (i32.const 0)))

  ;; wasi:filesystem/preopens.get-directories: -> list<tuple<descriptor, string>> = []
  ;; (no files in a proxy: open() fails with an OSError instead of trapping)
  (func (export "__wasm_import_filesystem_preopens_get_directories") (param $ret i32)
    (i32.store (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (i32.const 0)))
  ;; wasi:cli/environment.get-arguments / get-environment (componentize-py's preview-1 adapter): []
  (func (export "componentize_py_runtime::bindings::wasi::cli0_2_0::environment::get_arguments::wit_import1")
        (param $ret i32)
    (i32.store (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (i32.const 0)))
  (func (export "componentize_py_runtime::bindings::wasi::cli0_2_0::environment::get_environment::wit_import1")
        (param $ret i32)
    (i32.store (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (i32.const 0)))
)

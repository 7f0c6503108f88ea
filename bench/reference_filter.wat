;; Reference point for bench/http_headers.py: the same job as examples/http_headers with the
;; benchmark's configuration (add "x-served-by: pywasm-bench" to every response), written by
;; hand in WAT with no SDK and no interpreter.  It ignores its configuration.
;;
;;   python bench/http_headers.py --wasm bench/reference_filter.wat
;;
;; measures what any proxy-wasm filter costs on this machine, so the Python plugin's figures
;; can be split into "wasm in Envoy at all" and "Python + SDK".
(module
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-served-by")   ;; 11 bytes
  (data (i32.const 32) "pywasm-bench")  ;; 12 bytes
  (func (export "proxy_abi_version_0_2_1"))
  ;; Envoy only allocates to hand data over that this filter never asks for.
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    ;; map type 2 = response headers; the status is ignored; 0 = Continue
    (drop (call $add_header (i32.const 2) (i32.const 16) (i32.const 11)
                            (i32.const 32) (i32.const 12)))
    (i32.const 0)))

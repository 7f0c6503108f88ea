"""The proxy-wasm ABI constants. GENERATED from abi/proxy_wasm.yaml: do not edit.

Regenerate with ``python -m pywasm_sdk.tooling.abi``.
"""

from enum import IntEnum

ABI_VERSION = '0.2.1'


class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class Action(IntEnum):
    CONTINUE = 0
    PAUSE = 1


class BufferType(IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    FOREIGN_FUNCTION_ARGUMENTS = 8


class MapType(IntEnum):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class StreamType(IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(IntEnum):
    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


#: every hostcall the host provides (the names the raw bindings must have)
HOSTCALLS = (
    'proxy_log',
    'proxy_get_log_level',
    'proxy_get_current_time_nanoseconds',
    'proxy_set_tick_period_milliseconds',
    'proxy_get_buffer_bytes',
    'proxy_get_buffer_status',
    'proxy_set_buffer_bytes',
    'proxy_get_header_map_pairs',
    'proxy_set_header_map_pairs',
    'proxy_get_header_map_value',
    'proxy_add_header_map_value',
    'proxy_replace_header_map_value',
    'proxy_remove_header_map_value',
    'proxy_get_header_map_size',
    'proxy_continue_stream',
    'proxy_close_stream',
    'proxy_send_local_response',
    'proxy_get_status',
    'proxy_http_call',
    'proxy_grpc_call',
    'proxy_grpc_stream',
    'proxy_grpc_send',
    'proxy_grpc_cancel',
    'proxy_grpc_close',
    'proxy_set_shared_data',
    'proxy_get_shared_data',
    'proxy_register_shared_queue',
    'proxy_resolve_shared_queue',
    'proxy_enqueue_shared_queue',
    'proxy_dequeue_shared_queue',
    'proxy_define_metric',
    'proxy_increment_metric',
    'proxy_record_metric',
    'proxy_get_metric',
    'proxy_get_property',
    'proxy_set_property',
    'proxy_set_effective_context',
    'proxy_done',
    'proxy_call_foreign_function',
)

#: imports the build implements for the SDK (not hostcalls)
SDK_IMPORTS = (
    'pywasm_environ',
)

#: positions of the text (``string``) arguments of each raw import that has any
TEXT_PARAMS = {
    'proxy_log': (1,),
    'proxy_send_local_response': (1,),
    'proxy_http_call': (0,),
    'proxy_grpc_call': (1, 2),
    'proxy_grpc_stream': (1, 2),
    'proxy_call_foreign_function': (0,),
}

#: every callback the host may call
CALLBACKS = (
    'proxy_on_context_create',
    'proxy_on_vm_start',
    'proxy_on_configure',
    'proxy_on_tick',
    'proxy_on_queue_ready',
    'proxy_on_foreign_function',
    'proxy_on_new_connection',
    'proxy_on_downstream_data',
    'proxy_on_downstream_connection_close',
    'proxy_on_upstream_data',
    'proxy_on_upstream_connection_close',
    'proxy_on_request_headers',
    'proxy_on_request_body',
    'proxy_on_request_trailers',
    'proxy_on_response_headers',
    'proxy_on_response_body',
    'proxy_on_response_trailers',
    'proxy_on_http_call_response',
    'proxy_on_grpc_receive_initial_metadata',
    'proxy_on_grpc_receive',
    'proxy_on_grpc_receive_trailing_metadata',
    'proxy_on_grpc_close',
    'proxy_on_done',
    'proxy_on_log',
    'proxy_on_delete',
)


class CallbackSpec:
    """What the SDK does with one callback (see ``callbacks`` in abi/proxy_wasm.yaml)."""

    __slots__ = ("name", "params", "result", "context", "method", "awaits", "export")

    def __init__(self, name: str, params: tuple[tuple[str, str], ...], result: str | None,
                 context: str, method: str, awaits: str, export: str) -> None:
        self.name, self.params, self.result = name, params, result
        self.context, self.method, self.awaits, self.export = context, method, awaits, export

    def __repr__(self) -> str:
        return f'CallbackSpec({self.name!r})'


#: callback -> its parameters ((name, type) pairs), answer kind (None, 'bool', 'action'),
#: context kind, SDK method, what awaiting means and when it is exported
CALLBACK_SPECS = {
    'proxy_on_context_create': CallbackSpec('proxy_on_context_create', (('context_id', 'u32'), ('parent_context_id', 'u32')), None, 'any', '', 'never', 'always'),
    'proxy_on_vm_start': CallbackSpec('proxy_on_vm_start', (('root_context_id', 'u32'), ('vm_configuration_size', 'u32')), 'bool', 'root', 'on_vm_start', 'never', 'always'),
    'proxy_on_configure': CallbackSpec('proxy_on_configure', (('root_context_id', 'u32'), ('plugin_configuration_size', 'u32')), 'bool', 'root', 'on_configure', 'never', 'always'),
    'proxy_on_tick': CallbackSpec('proxy_on_tick', (('root_context_id', 'u32'),), None, 'root', 'on_tick', 'detached', 'always'),
    'proxy_on_queue_ready': CallbackSpec('proxy_on_queue_ready', (('root_context_id', 'u32'), ('queue_id', 'u32')), None, 'root', 'on_queue_ready', 'detached', 'always'),
    'proxy_on_foreign_function': CallbackSpec('proxy_on_foreign_function', (('root_context_id', 'u32'), ('function_id', 'u32'), ('arguments_size', 'u32')), None, 'root', '', 'never', 'never'),
    'proxy_on_new_connection': CallbackSpec('proxy_on_new_connection', (('context_id', 'u32'),), 'action', 'tcp', 'on_new_connection', 'DOWNSTREAM', 'overridden'),
    'proxy_on_downstream_data': CallbackSpec('proxy_on_downstream_data', (('context_id', 'u32'), ('data_size', 'u32'), ('end_of_stream', 'bool')), 'action', 'tcp', 'on_downstream_data', 'DOWNSTREAM', 'overridden'),
    'proxy_on_downstream_connection_close': CallbackSpec('proxy_on_downstream_connection_close', (('context_id', 'u32'), ('peer_type', 'u32')), None, 'tcp', 'on_downstream_connection_close', 'never', 'overridden'),
    'proxy_on_upstream_data': CallbackSpec('proxy_on_upstream_data', (('context_id', 'u32'), ('data_size', 'u32'), ('end_of_stream', 'bool')), 'action', 'tcp', 'on_upstream_data', 'never', 'overridden'),
    'proxy_on_upstream_connection_close': CallbackSpec('proxy_on_upstream_connection_close', (('context_id', 'u32'), ('peer_type', 'u32')), None, 'tcp', 'on_upstream_connection_close', 'never', 'overridden'),
    'proxy_on_request_headers': CallbackSpec('proxy_on_request_headers', (('context_id', 'u32'), ('num_headers', 'u32'), ('end_of_stream', 'bool')), 'action', 'http', 'on_request_headers', 'HTTP_REQUEST', 'overridden'),
    'proxy_on_request_body': CallbackSpec('proxy_on_request_body', (('context_id', 'u32'), ('body_size', 'u32'), ('end_of_stream', 'bool')), 'action', 'http', 'on_request_body', 'HTTP_REQUEST', 'overridden'),
    'proxy_on_request_trailers': CallbackSpec('proxy_on_request_trailers', (('context_id', 'u32'), ('num_trailers', 'u32')), 'action', 'http', 'on_request_trailers', 'HTTP_REQUEST', 'overridden'),
    'proxy_on_response_headers': CallbackSpec('proxy_on_response_headers', (('context_id', 'u32'), ('num_headers', 'u32'), ('end_of_stream', 'bool')), 'action', 'http', 'on_response_headers', 'HTTP_RESPONSE', 'overridden'),
    'proxy_on_response_body': CallbackSpec('proxy_on_response_body', (('context_id', 'u32'), ('body_size', 'u32'), ('end_of_stream', 'bool')), 'action', 'http', 'on_response_body', 'HTTP_RESPONSE', 'overridden'),
    'proxy_on_response_trailers': CallbackSpec('proxy_on_response_trailers', (('context_id', 'u32'), ('num_trailers', 'u32')), 'action', 'http', 'on_response_trailers', 'HTTP_RESPONSE', 'overridden'),
    'proxy_on_http_call_response': CallbackSpec('proxy_on_http_call_response', (('context_id', 'u32'), ('token', 'u32'), ('num_headers', 'u32'), ('body_size', 'u32'), ('num_trailers', 'u32')), None, 'root', '', 'detached', 'always'),
    'proxy_on_grpc_receive_initial_metadata': CallbackSpec('proxy_on_grpc_receive_initial_metadata', (('context_id', 'u32'), ('token', 'u32'), ('num_elements', 'u32')), None, 'root', '', 'detached', 'always'),
    'proxy_on_grpc_receive': CallbackSpec('proxy_on_grpc_receive', (('context_id', 'u32'), ('token', 'u32'), ('message_size', 'u32')), None, 'root', '', 'detached', 'always'),
    'proxy_on_grpc_receive_trailing_metadata': CallbackSpec('proxy_on_grpc_receive_trailing_metadata', (('context_id', 'u32'), ('token', 'u32'), ('num_elements', 'u32')), None, 'root', '', 'detached', 'always'),
    'proxy_on_grpc_close': CallbackSpec('proxy_on_grpc_close', (('context_id', 'u32'), ('token', 'u32'), ('status_code', 'u32')), None, 'root', '', 'detached', 'always'),
    'proxy_on_done': CallbackSpec('proxy_on_done', (('context_id', 'u32'),), 'bool', 'any', 'on_done', 'never', 'overridden'),
    'proxy_on_log': CallbackSpec('proxy_on_log', (('context_id', 'u32'),), None, 'any', 'on_log', 'never', 'overridden'),
    'proxy_on_delete': CallbackSpec('proxy_on_delete', (('context_id', 'u32'),), None, 'any', '', 'never', 'always'),
}

#: host limits of the wire formats
PAIRS_MAX_BYTES = 1048576
PAIRS_MAX_COUNT = 1024
RANDOM_GET_MAX_BYTES = 65536

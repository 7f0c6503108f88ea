"""Flow control in the manner of Sentinel: a token bucket per key, shared by every worker.

Each request is counted against the bucket of its key: the value of a request header, the
client's IP address, or the request path (without its query). A request that finds a token in
its bucket takes it and goes on; one that finds none is answered ``429 Too Many Requests`` with
a ``retry-after`` header saying when the next token arrives.

The buckets live in the proxy's shared data, which every worker's VM of the same ``vm_id``
sees, and each is updated with compare-and-swap, so the limit holds for the whole proxy, not
per worker. Time is the proxy's clock (``get_current_time_ns``).

Configuration (JSON; Istio's ``pluginConfig``)::

    {"key": "header", "header": "x-api-key",   # or "source_ip", or "path"
     "max_tokens": 10,                         # bucket size: the burst a key may send at once
     "tokens_per_fill": 10, "fill_interval_ms": 1000,   # refill rate (default: max_tokens per s)
     "on_missing_key": "shared",               # no such header: one bucket for all ("shared") or "allow"
     "max_keys": 10000,                        # keys with their own bucket; later ones share one
     "stat_prefix": "rate_limit"}              # metric names: <prefix>.allowed, .rejected, .keys

A configuration that is not this shape is rejected with a message naming the field.
"""

import json
import re
from typing import Any

from pywasm_sdk import (Action, CasMismatch, ConfigurationError, Counter, Gauge, HttpContext, RootContext,
                        get_current_time_ns, get_shared_data, log, properties, register, set_shared_data)

KEY_KINDS = ("header", "source_ip", "path")
MISSING_KEY = ("shared", "allow")
FIELDS = ("key", "header", "max_tokens", "tokens_per_fill", "fill_interval_ms", "on_missing_key",
          "max_keys", "stat_prefix")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")        # a header name, lower-case
_STAT_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_CAS_ATTEMPTS = 16
_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000


class Limit:
    """A parsed configuration."""

    def __init__(self, key: str, header: str, max_tokens: int, tokens_per_fill: int,
                 fill_interval_ms: int, on_missing_key: str, max_keys: int, stat_prefix: str) -> None:
        self.key, self.header = key, header
        self.max_tokens, self.tokens_per_fill = max_tokens, tokens_per_fill
        self.interval_ns = fill_interval_ms * _NS_PER_MS
        self.on_missing_key, self.max_keys, self.stat_prefix = on_missing_key, max_keys, stat_prefix

    def describe(self) -> str:
        what = f"header {self.header}" if self.key == "header" else self.key
        return (f"{self.max_tokens} tokens per {what}, {self.tokens_per_fill} more every "
                f"{self.interval_ns // _NS_PER_MS} ms")


def _positive_int(config: dict[str, Any], name: str, default: int | None = None) -> int:
    value = config.get(name, default)
    if value is None:
        raise ConfigurationError(f"{name}: required (a positive integer)")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name}: expected a positive integer, got {json.dumps(value)}")
    return value


def _choice(config: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None = None) -> str:
    value: str | None = config.get(name, default)
    if value is None:
        raise ConfigurationError(f"{name}: required, one of {', '.join(choices)}")
    if value not in choices:
        raise ConfigurationError(f"{name}: expected one of {', '.join(choices)}, got {json.dumps(value)}")
    return value


def parse_config(raw: bytes) -> Limit:
    """The limit a configuration describes; ConfigurationError names the field that is wrong."""
    if not raw.strip():
        raise ConfigurationError('no configuration: expected JSON such as {"key": "source_ip", "max_tokens": 10}')
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"the configuration is not JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError("the configuration's JSON is nested too deeply") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"the configuration must be a JSON object, not {type(config).__name__}")
    unknown = sorted(set(config) - set(FIELDS))
    if unknown:
        raise ConfigurationError(f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})")
    key = _choice(config, "key", KEY_KINDS)
    header = config.get("header")
    if key == "header":
        if header is None:
            raise ConfigurationError('header: required when key is "header" (the header to limit by)')
        if not isinstance(header, str) or not _TOKEN.fullmatch(header.lower()):
            raise ConfigurationError(f"header: {json.dumps(header)} is not a header name")
        header = header.lower()
    elif header is not None:
        raise ConfigurationError(f'header: only used when key is "header" (key is "{key}")')
    max_tokens = _positive_int(config, "max_tokens")
    stat_prefix = config.get("stat_prefix", "rate_limit")
    if not isinstance(stat_prefix, str) or not _STAT_NAME.fullmatch(stat_prefix):
        raise ConfigurationError(f"stat_prefix: {json.dumps(stat_prefix)} is not a metric name "
                                 "(letters, digits and _, in parts separated by dots)")
    return Limit(key, header or "", max_tokens,
                 tokens_per_fill=_positive_int(config, "tokens_per_fill", max_tokens),
                 fill_interval_ms=_positive_int(config, "fill_interval_ms", 1000),
                 on_missing_key=_choice(config, "on_missing_key", MISSING_KEY, "shared"),
                 max_keys=_positive_int(config, "max_keys", 10000),
                 stat_prefix=stat_prefix)


def ip_of(address: str) -> str:
    """The IP of an "ip:port" or "[ipv6]:port" peer address."""
    if address.startswith("["):
        return address[1:address.find("]")]
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


class Bucket:
    """Token-bucket arithmetic in integers: ``level`` counts tokens in units of 1/interval_ns,
    so refilling ``tokens_per_fill`` per ``interval_ns`` is exact whatever the elapsed time."""

    def __init__(self, limit: Limit) -> None:
        self.full = limit.max_tokens * limit.interval_ns
        self.cost = limit.interval_ns                     # one token
        self.rate = limit.tokens_per_fill                 # level gained per elapsed ns

    def refill(self, stored: bytes | None, now: int) -> int:
        """The level now, from a stored "level stamp" (a new or unreadable value is a full bucket)."""
        try:
            level_text, stamp_text = (stored or b"").split()
            level, stamp = int(level_text), int(stamp_text)
        except ValueError:
            return self.full
        return min(self.full, max(0, level) + max(0, now - stamp) * self.rate)

    def retry_after_s(self, level: int) -> int:
        """Whole seconds until the bucket holds one token again (at least 1)."""
        wait_ns = -(-(self.cost - level) // self.rate)
        return max(1, -(-wait_ns // _NS_PER_S))


class RateLimited(HttpContext):
    root: "RateLimit"

    def on_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        root = self.root
        key = self.key()
        if key is None:
            return Action.CONTINUE
        retry_after = root.take(key)
        if not retry_after:
            root.allowed.increment()
            return Action.CONTINUE
        root.rejected.increment()
        self.send_local_response(429, "rate limited\n", headers=[("retry-after", str(retry_after))],
                                 details="rate_limited")
        return Action.PAUSE

    def key(self) -> bytes | None:
        """The bucket's key (a shared-data key), or None when the request is not limited."""
        limit = self.root.limit
        if limit.key == "header":
            value = self.request_headers.get_bytes(limit.header)
            if value is None:
                return None if limit.on_missing_key == "allow" else self.root.prefix + b"missing"
            return self.root.prefix + b"h:" + value  # the raw bytes: distinct values, distinct keys
        if limit.key == "source_ip":
            return self.root.prefix + b"ip:" + ip_of(properties.source_address() or "").encode()
        path = self.request_headers.get_bytes(":path") or b""
        return self.root.prefix + b"path:" + path.split(b"?", 1)[0]


class RateLimit(RootContext):
    http_context = RateLimited

    def on_configure(self, plugin_config: bytes) -> bool:
        self.limit = parse_config(plugin_config)
        self.bucket = Bucket(self.limit)
        # Plugins configured with the same vm_id share the store: keep each plugin's buckets apart.
        self.prefix = f"rate_limit:{properties.plugin_name() or ''}:".encode()
        self.overflow_key = self.prefix + b"overflow"
        prefix = self.limit.stat_prefix
        self.allowed = Counter(prefix + ".allowed")
        self.rejected = Counter(prefix + ".rejected")
        self.keys = Gauge(prefix + ".keys")
        self.warned_full = False
        log.info("rate_limit: %s", self.limit.describe())
        return True

    def take(self, key: bytes) -> int:
        """Take a token from ``key``'s bucket: 0 when there was one, else the seconds until
        there is. Compare-and-swap, retried when another worker wrote in between."""
        bucket = self.bucket
        for _ in range(_CAS_ATTEMPTS):
            current = get_shared_data(key)
            new_key = current is None and key != self.overflow_key
            if new_key and self.keys.value >= self.limit.max_keys:
                key = self.overflow()
                continue
            now = get_current_time_ns()
            level = bucket.refill(current.value if current else None, now)
            if level < bucket.cost:
                return bucket.retry_after_s(level)  # rejected: the stored state stays right
            try:
                set_shared_data(key, f"{level - bucket.cost} {now}", cas=current.cas if current else 0)
            except CasMismatch:
                continue
            if new_key:
                self.keys.add(1)
            return 0
        log.warning("rate_limit: %r: another worker wrote first %d times in a row; letting the "
                    "request through", key, _CAS_ATTEMPTS)
        return 0

    def overflow(self) -> bytes:
        if not self.warned_full:
            self.warned_full = True
            log.warning("rate_limit: %d keys have their own bucket (max_keys); new keys share one",
                        self.limit.max_keys)
        return self.overflow_key


register(RateLimit)

"""bench/costs.py's variants and arithmetic (pywasm_sdk.tooling.bench.costs), without Envoy.

No timing is asserted: the figures come from the benchmark. What can go wrong here is logic: a
cost taken from the wrong pair of variants, a WAT twin that does not do what its Python plugin
does, the per-round spread not matching the whole run's figure.
"""

from __future__ import annotations

import math

import pytest
import wasmtime

from pywasm_sdk.testing import MockHost
from pywasm_sdk.tooling.bench import costs
from pywasm_sdk.tooling.bench.stats import mean_error
from pywasm_sdk.tooling.build import preflight, resolve_plugin

#: per-variant figures made so that every cost has a different, known value
FIGURES = {
    "none": 100.0, "reference": 103.5,
    "py:lifecycle": 105.0, "py:one": 115.0, "py:two": 118.0, "py:add1": 120.0, "py:add5": 128.0,
    "wat:lifecycle": 101.0, "wat:one": 102.0, "wat:two": 103.0, "wat:add1": 104.0, "wat:add5": 108.0,
}
EXPECTED = {  # cost: (py, wat)
    "module": (5, 1), "first_entry": (10, 1), "entry": (3, 1), "first_hostcall": (5, 2),
    "hostcall": (2, 1), "job": (20, 4),
}


def test_variants_cover_every_stage_twice():
    assert set(costs.variant_names()) == set(FIGURES)


def test_each_cost_is_its_difference_of_variants():
    got = costs.decompose(FIGURES)
    assert {k: (v["py"], v["wat"]) for k, v in got.items() if k != "reference"} == EXPECTED
    assert all(got[k]["python_own"] == py - wat for k, (py, wat) in EXPECTED.items())
    assert got["reference"] == pytest.approx(3.5)
    # the job is the sum of its steps, in both families
    for part in ("py", "wat"):
        assert got["job"][part] == got["module"][part] + got["first_entry"][part] + got["first_hostcall"][part]


def test_rounds_average_to_the_whole_run_and_give_an_error():
    # two rounds whose mean is FIGURES: +d in one round, -d in the other, d differing by variant
    offsets = {name: (i % 3) * 0.5 for i, name in enumerate(FIGURES)}
    rounds = {name: [v + offsets[name], v - offsets[name]] for name, v in FIGURES.items()}
    spread = costs.decompose_rounds(rounds)
    whole = costs.decompose(FIGURES)
    for key in EXPECTED:
        for part in ("py", "wat", "python_own"):
            assert spread[key][part]["mean"] == pytest.approx(whole[key][part])
            assert spread[key][part]["count"] == 2
    # module, py = (py:lifecycle - none): offsets 1.0 and 0.0 -> per round 6.0 and 4.0
    assert spread["module"]["py"]["se"] == pytest.approx(1.0)
    assert spread["reference"]["mean"] == pytest.approx(3.5)


def test_mean_error_on_fixed_numbers():
    got = mean_error([1.0, 2.0, 3.0, 4.0])
    assert got["mean"] == 2.5 and got["count"] == 4
    assert got["se"] == pytest.approx(math.sqrt(5 / 3) / 2)
    assert math.isnan(mean_error([7.0])["se"])
    assert mean_error([])["count"] == 0


#: the callbacks Envoy makes per HTTP stream: what a twin must export exactly as its plugin does
STREAM_CALLBACKS = {"proxy_on_context_create", "proxy_on_delete", "proxy_on_request_headers",
                    "proxy_on_response_headers", "proxy_on_log", "proxy_on_done"}


@pytest.mark.parametrize("stage", costs.STAGES, ids=[s.key for s in costs.STAGES])
def test_python_plugin_and_wat_twin_do_the_same(stage, tmp_path):
    source = tmp_path / f"costs_{stage.key}.py"
    source.write_text(costs.python_source(stage))
    python_exports = set(preflight(resolve_plugin(source))["callbacks"]) & STREAM_CALLBACKS
    wat = wasmtime.wat2wasm(costs.wat_source(stage))
    expected = costs.expected_headers(f"py:{stage.key}")
    assert expected == costs.expected_headers(f"wat:{stage.key}")
    assert len(expected) == stage.adds
    for host in (MockHost.from_plugin(source), MockHost.from_wasm(wat)):
        with host:
            if host.kind == "wasm":
                assert set(host.exports) & STREAM_CALLBACKS == python_exports
            stream = host.http_stream()
            stream.send_request_headers([(":path", "/"), (":method", "GET")], end_of_stream=True)
            stream.send_response_headers([(":status", "200")], end_of_stream=True)
            stream.complete()
            added = [name for name, _ in stream.response_headers if name.startswith("x-cost-")]
            assert added == expected, host.kind


# -- the profile's reading of perf ---------------------------------------------------------------

PERF_REPORT = (
    "# Samples: 120  of event 'cpu-clock'\n"
    "#\n"
    " 50.00%\t60        \tenvoy                \t[.] 0x0000000001a2b3c4\n"
    " 25.00%\t30        \t[unknown]            \t[.] 0x00007f0012345678\n"
    " 10.00%\t12        \t[kernel.kallsyms]    \t[k] do_syscall_64\n"
    "  8.33%\t10        \tlibc.so.6            \t[.] __memmove_avx_unaligned\n"
    "  5.00%\t6         \t[JIT] tid 4242       \t[.] _PyEval_EvalFrameDefault\n"
    "  1.67%\t2         \tlibfoo.so            \t[.] foo\n"
    "\n"
    "# a footer perf may print\n"
)


def test_perf_report_rows_are_read_and_classified():
    from pywasm_sdk.tooling.bench import profile

    rows = profile.parse_report(PERF_REPORT)
    assert [r["samples"] for r in rows] == [60, 30, 12, 10, 6, 2]
    assert rows[2]["symbol"] == "do_syscall_64" and rows[4]["dso"] == "[JIT] tid 4242"
    shares = profile.split_by_class(rows)
    assert list(shares) == list(profile.CLASSES)
    assert shares["envoy (with V8's runtime)"] == pytest.approx(60 / 120)
    assert shares["wasm code"] == pytest.approx(36 / 120)  # [unknown] and [JIT]
    assert shares["kernel"] == pytest.approx(12 / 120)
    assert shares["C/C++ libraries"] == pytest.approx(10 / 120)
    assert shares["other"] == pytest.approx(2 / 120)
    assert profile.split_by_class([]) == dict.fromkeys(profile.CLASSES, 0.0)


# -- measure_rounds' bookkeeping (no Envoy: this process stands in for it) -----------------------

class _FixedClient:
    outcome_name = "calls"

    def __init__(self, latency_ns: int, log: list[int], me: int) -> None:
        self.latency_ns, self.log, self.me, self.calls = latency_ns, log, me, 0

    def once(self) -> int:
        self.log.append(self.me)
        self.calls += 1
        return self.latency_ns

    def outcome(self) -> int:
        return self.calls

    def close(self) -> None:
        pass


def test_measure_rounds_gives_every_client_one_block_per_round():
    import os

    from pywasm_sdk.tooling.bench.load import measure_rounds

    log: list[int] = []
    clients = [_FixedClient(1000 * (i + 1), log, i) for i in range(3)]
    got = measure_rounds(os.getpid(), clients, count=25, block=10, warmup=0)
    assert got["count"] == 30  # rounded up to whole blocks
    assert [c.calls for c in clients] == [30, 30, 30]
    # rounds go forward, then backward: 0 1 2 | 2 1 0 | 0 1 2, one block each
    assert log[::10] == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    for i, figures in enumerate(got["clients"]):
        assert figures["block_p50_us"] == [i + 1.0] * 3
        assert len(figures["block_cpu_us"]) == 3 and figures["p50_us"] == i + 1.0
    with pytest.raises(ValueError):
        measure_rounds(os.getpid(), clients[:1], count=10, block=10, warmup=0)

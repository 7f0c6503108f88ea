"""The benchmarks' statistics and readers (pywasm_sdk.tooling.bench): pure functions, no Envoy.

No timing is asserted anywhere: speed is measured by the benchmarks, never by tests.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import wasmtime

from pywasm_sdk.tooling.bench import procfs
from pywasm_sdk.tooling.bench.modules import SIZE_PARTS, section_sizes, size_text, wasm_from_wat
from pywasm_sdk.tooling.bench.plugin import to_json_text
from pywasm_sdk.tooling.bench.stats import (
    block_order, latency_summary, pair_spread, percentile, ratio, round_order,
)
from pywasm_sdk.tooling.wasm_file import ModuleFileError

from .conftest import REPO


# -- percentiles -------------------------------------------------------------------------------

def test_percentile_is_nearest_rank_of_a_measured_value():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.5) == 1
    assert percentile([10, 20, 30, 40], 50) == 20  # rank ceil(2) = 2, not an interpolated 25
    assert percentile([10, 20, 30, 40], 51) == 30
    assert percentile([7], 99) == 7


def test_percentile_of_nothing_is_nan_and_p_must_be_a_percentage():
    assert math.isnan(percentile([], 50))
    for bad in (0, -1, 101):
        with pytest.raises(ValueError, match="expected 0 < p <= 100"):
            percentile([1, 2], bad)


def test_latency_summary_converts_ns_to_us():
    s = latency_summary([3000, 1000, 2000, 4000])  # unsorted on purpose
    assert s == {"p50_us": 2.0, "p90_us": 4.0, "p99_us": 4.0, "mean_us": 2.5}
    assert all(math.isnan(v) for v in latency_summary([]).values())


# -- interleaving ------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks_each", [1, 2, 3, 4, 5, 8, 75])
def test_block_order_pairs_each_filter_block_with_a_baseline_block(blocks_each):
    order = block_order(blocks_each)
    assert len(order) == 2 * blocks_each
    assert order.count(0) == order.count(1) == blocks_each
    pairs = [order[i:i + 2] for i in range(0, len(order), 2)]
    assert all(sorted(p) == [0, 1] for p in pairs)
    if blocks_each % 4 == 0:  # each listener goes first in half of the pairs
        assert sum(p[0] == 0 for p in pairs) == blocks_each // 2


def test_block_order_is_abba_baab():
    assert block_order(4) == [0, 1, 1, 0, 1, 0, 0, 1]
    with pytest.raises(ValueError):
        block_order(0)


def test_round_order_alternates_direction_and_can_keep_one_variant_last():
    assert round_order("ABC", 3) == list("ABCCBAABC")
    assert round_order(["none", "plugin"], 2) == ["none", "plugin", "plugin", "none"]
    assert round_order(["none", "plugin"], 2, last="plugin") == ["none", "plugin", "none", "plugin"]
    assert round_order("AB", 1, last="A") == ["B", "A"]
    order = round_order("ABCD", 4)
    positions = {v: sum(i % 4 for i, x in enumerate(order) if x == v) for v in "ABCD"}
    assert len(set(positions.values())) == 1  # no variant is favoured by its place in the rounds
    with pytest.raises(ValueError):
        round_order("AB", 0)


def test_pair_spread_gives_median_and_quartiles():
    spread = pair_spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert spread["median"] == 3.0 and spread["pairs"] == 5
    assert spread["q25"] == pytest.approx(1.5) and spread["q75"] == pytest.approx(4.5)
    single = pair_spread([2.5])
    assert single["median"] == 2.5 and math.isnan(single["q25"]) and single["pairs"] == 1
    assert pair_spread([])["pairs"] == 0 and math.isnan(pair_spread([])["median"])


def test_ratio_of_a_zero_baseline_is_nan():
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))


def test_json_output_has_null_where_a_figure_is_nan():
    text = to_json_text({"a": math.nan, "b": [1.0, math.inf], "c": {2: 3}})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"2": 3}}


# -- modules and /proc -------------------------------------------------------------------------

def test_section_sizes_split_a_module_and_add_up(tmp_path):
    wasm = wasm_from_wat(REPO / "bench" / "reference_filter.wat", tmp_path)
    data = wasm.read_bytes()
    sizes = section_sizes(data)
    assert sizes["total"] == len(data) == sum(sizes[p] for p in SIZE_PARTS)
    assert sizes["code"] > 0 and sizes["data"] >= len("x-served-by") + len("pywasm-bench")
    named = wasmtime.wat2wasm('(module (func $a) (func $b))')
    assert section_sizes(named)["names"] > 0


def test_wat_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.wat"
    bad.write_text("(module (func $f (i32.bogus)))")
    with pytest.raises(ModuleFileError, match="bad.wat: not valid WebAssembly text"):
        wasm_from_wat(bad, tmp_path)
    with pytest.raises(ModuleFileError, match="missing.wat: cannot read it"):
        wasm_from_wat(tmp_path / "missing.wat", tmp_path)


def test_size_text_units():
    assert size_text(706) == "706 B"
    assert size_text(12_345) == "12.3 kB"
    assert size_text(18_374_000) == "18.37 MB"


def test_proc_readers_on_this_process():
    rss = procfs.rss_kb(os.getpid())
    assert 0 < rss["VmRSS"] <= rss["VmHWM"]
    sum(range(100_000))  # some CPU between the readings
    assert procfs.cpu_ns(os.getpid()) > 0 and procfs.cpu_ticks(os.getpid()) >= 0
    noise = procfs.Noise().result()
    assert set(noise) == {"other_processes_cores", "steal_cores", "seconds"}
    assert noise["other_processes_cores"] >= 0 and noise["steal_cores"] >= 0


SMAPS = """\
00400000-02000000 r-xp 00000000 08:01 123 /usr/bin/envoy
Rss:               40000 kB
7f0000000000-7f0000a00000 rw-p 00000000 00:00 0
Rss:                7000 kB
7f0000a00000-7f0200a00000 ---p 00000000 00:00 0
Rss:                   0 kB
7f0300000000-7f0300e00000 rwxp 00000000 00:00 0
Rss:               12000 kB
7f0400000000-7f0408000000 rw-p 00000000 00:00 0
Rss:              100000 kB
7f0408000000-7f0408100000 ---p 00000000 00:00 0
Rss:                   0 kB
7f0500000000-7f0500100000 r--p 00000000 08:01 9 /usr/lib/libc.so.6
Rss:                1000 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 100 kB
"""


def test_resident_memory_splits_by_kind_of_mapping():
    """A read-write mapping is a wasm memory only when a guard reservation of 1 GiB or more
    follows it directly (a small PROT_NONE page after a heap does not make it one)."""
    kinds, memories = procfs.classify_smaps(SMAPS, "/usr/bin/envoy")
    assert memories == 1
    assert kinds == {"executable file": 40000, "other files": 1000, "compiled code": 12000,
                     "wasm memories": 7000, "other anonymous": 100100}

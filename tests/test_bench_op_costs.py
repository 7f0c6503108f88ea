"""bench/op_costs.py's generated plugin, natively (no build, no fuel): every construct it prices
runs, and runs the number of times the figure is divided by.

No cost is asserted: the figures come from the benchmark. What can go wrong here is the plugin:
a construct whose body raises would be priced as the cost of an exception, one whose branch is
never taken as nothing at all.
"""

from __future__ import annotations

import importlib.util

import pytest

from pywasm_sdk.testing import MockHost
from pywasm_sdk.tooling.bench.costs import one_stream

from .conftest import REPO

SCRIPT = REPO / "bench" / "op_costs.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("op_costs_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


op_costs = _load_script()


class _Counted:
    """An iterable counting the items its loops take: how many times a construct's body ran."""

    def __init__(self, items: list[int]) -> None:
        self.items, self.taken = items, 0

    def __iter__(self):
        for item in self.items:
            self.taken += 1
            yield item


@pytest.mark.parametrize("construct", ["", *op_costs.CONSTRUCTS])
def test_each_construct_runs_its_iterations_without_raising(tmp_path, construct):
    plugin = tmp_path / "op_costs_plugin.py"
    plugin.write_text(op_costs.plugin_source(3))
    with MockHost.from_plugin(plugin, plugin_config=construct) as host:
        plugin_globals = host._guest.runtime.registrations()[0].root.on_configure.__globals__
        counted = plugin_globals["ITERATIONS"] = _Counted(plugin_globals["ITERATIONS"])
        one_stream(host)
        assert not host.logs.find("raised"), [r.message for r in host.logs]
    assert counted.taken == (3 if construct else 0)


def test_every_construct_has_a_branch_of_its_own():
    source = op_costs.plugin_source(1)
    compile(source, "op_costs_plugin.py", "exec")
    for name, (_, body) in op_costs.CONSTRUCTS.items():
        assert f"construct == {name!r}:\n        for _ in ITERATIONS:\n            {body}\n" in source

"""Hostile input through a real Envoy, generated with hypothesis, for every example.

One Envoy per example serves two listeners with the plugin: a fixed one (a valid configuration)
that takes hostile requests, responses or connections, and one delivered by LDS from a file
whose plugin configuration each hypothesis example replaces (Envoy builds the listener again and
runs ``on_configure`` in a fresh copy of the already compiled VM, so a configuration costs a
fraction of a second, not an Envoy start). After every example:

- the VM never trapped and no Python exception escaped the plugin's code (Envoy's log has no
  ``Function: proxy_on_... failed`` and no ``... raised (context N)``);
- the answer is the plugin's designed one, or Envoy's own (a reply without the upstream's marker
  header, with a status Envoy uses for refused or failed exchanges);
- a configuration is accepted by Envoy exactly when the plugin, run natively under the mock
  host, accepts it, and a rejection is the plugin's one-line ``configuration rejected:``;
- Envoy is still running and ``/ready`` says LIVE.

How many examples: ``PYWASM_HOSTILE_EXAMPLES`` per test and per plugin (default 10, and 6 under
``CI=true``: about a minute and a half for the whole file in CI, most of it Envoy starts). A
longer hunt, e.g. before a release (about 7 minutes at 40)::

    PYWASM_HOSTILE_EXAMPLES=500 python -m pytest tests/test_e2e_hostile_input.py -x

Every example under ``examples/`` needs a profile in ``tests/hostile_profiles.py``: its helper
services and its designed answers; an example without one fails
``test_every_example_has_a_profile``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES
from .hostile_envoy import DynamicListener, LogWatch, exchange
from .hostile_profiles import BODIES, HOSTILE_CONFIGS, PROFILES, Profile, ordinary_request

EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "plugin.py").exists())
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HOW_MANY = int(os.environ.get("PYWASM_HOSTILE_EXAMPLES") or (6 if CI else 10))
HYPOTHESIS = settings(max_examples=HOW_MANY, deadline=None, suppress_health_check=list(HealthCheck))
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # bodies of 300 kB
HTTP_EXAMPLES = [n for n in EXAMPLE_NAMES if n in PROFILES and PROFILES[n].kind == "http"]
TCP_EXAMPLES = [n for n in EXAMPLE_NAMES if n in PROFILES and PROFILES[n].kind == "network"]


@dataclass
class Served:
    """One example in one Envoy: the fixed listener, the dynamic one, and what checks them."""

    name: str
    profile: Profile
    envoy: E.Envoy
    fixed_port: int
    dynamic_port: int
    dynamic: DynamicListener
    watch: LogWatch
    services: dict[str, Any]
    fixed_expectation: Any = None
    #: configurations this Envoy rejected: it remembers them and rejects them again at once,
    #: without running on_configure (so without the plugin's log line)
    rejected: set[bytes] = field(default_factory=set)
    _next_id: int = 0

    def next_id(self) -> bytes:
        self._next_id += 1
        return b"%d" % self._next_id


def test_every_example_has_a_profile():
    missing = [n for n in EXAMPLE_NAMES if n not in PROFILES]
    assert not missing, (f"examples without a hostile-input profile: {missing}; add one to PROFILES "
                         "in tests/hostile_profiles.py (its helper services, its designed answers)")


@pytest.fixture(scope="module")
def served(request, pywasm_build, tmp_path_factory) -> Iterator[Served]:
    name: str = request.param
    profile = PROFILES[name]
    wasm = pywasm_build(EXAMPLES / name)
    fixed_port, dynamic_port, admin_port = E.free_port(), E.free_port(), E.free_port()
    services = profile.start_services(fixed_port, dynamic_port)
    try:
        config = profile.bootstrap(wasm, profile.config, fixed_port, admin_port, services)
        dynamic = DynamicListener(
            tmp_path_factory.mktemp(f"hostile-{name}") / "lds.yaml",
            lambda plugin_config: profile.bootstrap(wasm, plugin_config, dynamic_port, admin_port,
                                                    services)["static_resources"]["listeners"][0])
        dynamic.write(profile.config)
        config.update(dynamic.bootstrap_part())
        # old listeners drain for a second, not Envoy's default ten minutes: a long hunt
        # replaces the dynamic listener hundreds of times
        with E.Envoy(config, extra_args=["--drain-time-s", "1"]) as envoy:
            with profile.native(profile.config) as host:
                expectation = profile.expectation(host, services, fixed=True)
            served = Served(name, profile, envoy, fixed_port, dynamic_port, dynamic, LogWatch(envoy),
                            services, expectation)
            served.watch.check("start")
            yield served
            served.watch.check("the end")
    finally:
        profile.stop_services(services)


@pytest.mark.envoy
@pytest.mark.parametrize("served", HTTP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(data=st.data())
def test_hostile_requests(served, data):
    req = data.draw(served.profile.requests(), label="request")
    rid = served.next_id()
    reply = exchange(served.fixed_port, req.raw(rid))
    served.profile.check_request(served, req, rid, reply)
    served.watch.check(req.describe())


@pytest.mark.envoy
@pytest.mark.parametrize("served", HTTP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(data=st.data())
def test_hostile_responses(served, data):
    resp = data.draw(served.profile.responses(), label="response")
    rid = served.next_id()
    upstream = served.services["upstream"]
    upstream.scripts[rid] = resp.raw(rid)
    if resp.framing == "close":
        upstream.closes.add(rid)
    reply = exchange(served.fixed_port, ordinary_request(served.profile.passing).raw(rid))
    served.profile.check_response(served, resp, rid, reply)
    served.watch.check(resp.describe())


@pytest.mark.envoy
@pytest.mark.parametrize("served", TCP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(data=st.data(), chunks=st.lists(st.one_of(st.binary(max_size=2000), BODIES), max_size=4),
       ending=st.sampled_from(["echoed", "echoed", "half-close", "reset"]))
def test_hostile_connections(served, data, chunks, ending):
    source = data.draw(st.sampled_from(served.profile.sources), label="source")
    destination = data.draw(st.sampled_from(served.profile.destinations), label="destination")
    what = f"from {source} to {destination}: {[len(c) for c in chunks]} bytes, then {ending}"
    served.profile.check_connection(served.fixed_port, source, destination, chunks, ending,
                                    served.fixed_expectation[source, destination], what)
    served.watch.check(what)


@pytest.mark.envoy
@pytest.mark.parametrize("served", HTTP_EXAMPLES + TCP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(data=st.data())
def test_hostile_configurations(served, data):
    valid = data.draw(st.booleans(), label="of the shape the plugin expects")
    config = data.draw(served.profile.valid_configs if valid else HOSTILE_CONFIGS, label="config")
    what = f"configuration {config[:80]!r} ({len(config)} bytes)"
    with served.profile.native(config) as host:
        accepted_natively = host.configured
        expected = served.profile.expectation(host, served.services, fixed=False) if host.configured else None
    accepted = served.dynamic.apply(served.envoy, config)
    event("accepted" if accepted else "rejected")
    text = served.watch.check(what)
    assert accepted == accepted_natively, f"{what}: Envoy {'took' if accepted else 'rejected'} it, natively not"
    if not accepted:
        key = config.encode() if isinstance(config, str) else config
        if key not in served.rejected:
            assert "on_configure: configuration rejected: " in text, f"{what}: rejected without a reason:\n{text[-2000:]}"
            served.rejected.add(key)
        return
    served.profile.check_serving(served, served.dynamic_port, expected)
    served.watch.check(what)

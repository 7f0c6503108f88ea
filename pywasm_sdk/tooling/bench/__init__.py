"""Measuring a plugin in a real Envoy: what ``pywasm bench`` and the scripts in ``bench/`` share.

One implementation, used by the command and by the repository's benchmarks alike:

- :mod:`.stats`: pure statistics (nearest-rank percentiles, the interleaving orders, the spread
  of paired block differences);
- :mod:`.procfs`: what the kernel says about a process (RSS, on-CPU time) and about the machine
  (how busy other processes kept it: the noise of a run);
- :mod:`.upstream`: the minimal upstream, its own process (fixed HTTP 200, or TCP echo);
- :mod:`.modules`: the module under test (a ``.wat`` made binary, its section sizes);
- :mod:`.starts`: Envoy starts: start-to-ready, CPU to start, RSS, admin ``/memory``;
  several variants started in interleaved rounds;
- :mod:`.load`: the added latency and Envoy CPU per request or connection, measured in
  interleaved blocks on two listeners of one Envoy (with the filter, and without);
- :mod:`.flood`: volume for long runs (bench/soak.py): many exchanges in flight from one loop,
  every answer checked; ``wrk`` when it is installed;
- :mod:`.plugin`: the whole measurement of one module against the same Envoy without it,
  and its text report (``pywasm bench``).

Everything runs on 127.0.0.1, and every process started here is stopped by its PID.
"""

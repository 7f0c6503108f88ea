"""Where the test plugins are. Builds come from the pytest plugin pywasm-sdk ships: the
``pywasm_build`` fixture (enabled by its ``pytest11`` entry point) builds each plugin at most once
per session, and not again while nothing it depends on changed: the fixture authors use."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLUGINS = Path(__file__).resolve().parent / "plugins"


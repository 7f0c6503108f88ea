"""What importing a package costs a plugin's module: size by part, against a plugin without it.

    python bench/package_sizes.py [PACKAGE ...] [--json out.json]

(from the repository root, with the package and its ``test`` extra installed). For each package
of docs/packages.md's table (or the ones named), a minimal HTTP plugin that imports it is built
(through the build cache, so a second run is quick), next to the same plugin without the import.
A package's import adds to the module's data section (the pre-initialised heap holds its
modules); the code section, CPython itself, does not change. Sizes do not depend on the
machine's load, but they do on the build pipeline: run again after the linker changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pywasm_sdk.tooling.bench.modules import section_sizes, size_text  # noqa: E402
from pywasm_sdk.tooling.run import cached_build  # noqa: E402

#: package (as pip names it) -> the import lines of its plugin (what docs/packages.md exercises)
CASES = {
    "(none)": "",
    "PyJWT": "import jwt",
    "cachetools": "import cachetools",
    "attrs": "import attrs",
    "python-dateutil": "from dateutil import parser, relativedelta, rrule",
    "idna": "import idna",
    "msgpack": "import msgpack",
    "PyYAML": "import yaml",
    "protobuf": "from google.protobuf import struct_pb2",
    "all of them": "\n".join(["import jwt, cachetools, attrs, idna, msgpack, yaml",
                              "from dateutil import parser, relativedelta, rrule",
                              "from google.protobuf import struct_pb2"]),
}

PLUGIN = '''{imports}
from pywasm_sdk import HttpContext, register


class Plugin(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        return None


register(http=Plugin)
'''


def measure(name: str, imports: str, folder: Path) -> dict[str, int]:
    plugin = folder / f"size_{''.join(c if c.isalnum() else '_' for c in name)}.py"
    plugin.write_text(PLUGIN.format(imports=imports))
    print(f"building {name} ...", file=sys.stderr, flush=True)
    wasm, _callbacks = cached_build(plugin, lambda message: None)
    return section_sizes(wasm.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", help=f"some of: {', '.join(list(CASES)[1:])}")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    unknown = set(args.packages) - set(CASES)
    if unknown:
        parser.error(f"unknown package(s) {sorted(unknown)}; known: {', '.join(list(CASES)[1:])}")
    names = ["(none)"] + (args.packages or list(CASES)[1:])
    # a fixed folder: the build cache keys on the plugin's path too
    folder = Path(tempfile.gettempdir()) / "pywasm-package-sizes"
    folder.mkdir(exist_ok=True)
    sizes = {name: measure(name, CASES[name], folder) for name in names}
    base = sizes["(none)"]
    print(f"{'package':<18}{'module':>10}{'code':>10}{'data':>10}{'added':>10}{'added data':>12}")
    for name, part in sizes.items():
        print(f"{name:<18}{size_text(part['total']):>10}{size_text(part['code']):>10}{size_text(part['data']):>10}"
              f"{size_text(part['total'] - base['total']):>10}{size_text(part['data'] - base['data']):>12}")
    if args.json:
        Path(args.json).write_text(json.dumps(sizes, indent=2))


if __name__ == "__main__":
    main()

"""The build cache key: the modules the plugin imports, the SDK's build inputs, the tools, the
options; nothing else (pywasm_sdk/tooling/build_cache.py)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pywasm_sdk.tooling import build_cache, resources
from pywasm_sdk.tooling.build import BuildError, preflight, resolve_plugin
from pywasm_sdk.tooling.build_cache import BUILD_TOOLS, build_key, build_options, cached_build, key_manifest

from .conftest import EXAMPLES

PLUGIN = """\
    import helpers
    from rules import match

    from pywasm_sdk import HttpContext, register


    class Ctx(HttpContext):
        def on_request_headers(self, num_headers, end_of_stream):
            helpers.note(match(self.request_headers.get(":path")))


    register(http=Ctx)
    """


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def folder_plugin(folder: Path) -> Path:
    """plugin.py, a helper module and a package it imports, and files it does not import."""
    return write(folder, {
        "plugin.py": PLUGIN,
        "helpers.py": "def note(x):\n    return x\n",
        "rules/__init__.py": "from .match import match\n",
        "rules/match.py": "def match(path):\n    return path == '/'\n",
        "test_plugin.py": "def test_nothing():\n    pass\n",
        "conftest.py": "",
        "README.md": "# a plugin\n",
        "unused.py": "X = 1\n",
        "tools/gen.py": "print('generates something')\n",
    })


def edit(path: Path, text: str = "\n# edited\n") -> None:
    path.write_text(path.read_text() + text)


def test_preflight_reports_the_files_of_the_modules_the_plugin_imports(tmp_path):
    folder = folder_plugin(tmp_path / "p")
    sources = preflight(resolve_plugin(folder))["sources"]
    assert sources == {"helpers": str(folder / "helpers.py"), "plugin": str(folder / "plugin.py"),
                       "rules": str(folder / "rules" / "__init__.py"),
                       "rules.match": str(folder / "rules" / "match.py")}


def test_files_the_plugin_does_not_import_do_not_change_the_key(tmp_path):
    folder = folder_plugin(tmp_path / "p")
    key = build_key(folder)
    for name in ("test_plugin.py", "conftest.py", "README.md", "unused.py", "tools/gen.py"):
        edit(folder / name)
    (folder / "test_more.py").write_text("def test_more():\n    pass\n")
    assert build_key(folder) == key


@pytest.mark.parametrize("changed", ["plugin.py", "helpers.py", "rules/__init__.py", "rules/match.py"])
def test_each_imported_module_is_part_of_the_key(tmp_path, changed):
    folder = folder_plugin(tmp_path / "p")
    key = build_key(folder)
    edit(folder / changed)
    assert build_key(folder) != key


def test_a_single_file_plugin_hashes_its_sibling_modules(tmp_path):
    write(tmp_path, {"filter.py": PLUGIN, "helpers.py": "def note(x):\n    return x\n",
                     "rules.py": "def match(path):\n    return True\n", "other.py": "Y = 2\n"})
    key = build_key(tmp_path / "filter.py")
    edit(tmp_path / "other.py")
    assert build_key(tmp_path / "filter.py") == key
    edit(tmp_path / "rules.py")
    assert build_key(tmp_path / "filter.py") != key


def test_the_key_does_not_depend_on_where_the_sources_are(tmp_path):
    first = folder_plugin(tmp_path / "a" / "p")
    # a parent folder named like a part of the SDK the key leaves out changes nothing either
    second = shutil.copytree(first, tmp_path / "testing" / "elsewhere")
    assert build_key(first) == build_key(second)


def test_a_broken_plugin_has_no_key(tmp_path):
    write(tmp_path, {"plugin.py": "import not_a_module_anywhere\n"})
    with pytest.raises(BuildError, match="not_a_module_anywhere"):
        build_key(tmp_path)


def sdk_copy(under: Path) -> Path:
    """A copy of the SDK package under a folder named ``testing``."""
    package = resources.sdk_source_root() / "pywasm_sdk"
    return shutil.copytree(package, under / "testing" / "site" / "pywasm_sdk",
                           ignore=shutil.ignore_patterns("__pycache__"))


def manifest(sdk: Path, **overrides) -> str:
    args = dict(module="plugin", sources={}, options={}, sdk_package=sdk, data_dirs=[],
                versions={"componentize-py": "1"})
    args.update(overrides)
    return key_manifest(**args)


def test_the_sdk_is_hashed_wherever_it_is_installed_but_only_what_the_build_uses(tmp_path):
    sdk = sdk_copy(tmp_path)
    before = manifest(sdk)
    assert "sdk tooling/build.py " in before and "sdk tooling/linker.py " in before
    assert "sdk _dispatch.py " in before and "sdk tooling/preflight.py " in before
    for unused in ("testing/host.py", "tooling/bench/stats.py", "tooling/run.py", "tooling/cli.py"):
        assert f"sdk {unused} " not in before
        edit(sdk / unused)
    assert manifest(sdk) == before
    for changed in ("tooling/linker.py", "hostcalls.py"):
        edit(sdk / changed)
        after = manifest(sdk)
        assert after != before
        before = after
    # a module the linker starts to import becomes part of the key
    (sdk / "tooling" / "newpass.py").write_text("X = 1\n")
    assert manifest(sdk) == before
    edit(sdk / "tooling" / "linker.py", "\nfrom . import newpass  # noqa\n")
    assert "sdk tooling/newpass.py " in manifest(sdk)


def test_abi_and_build_folders_are_hashed(tmp_path):
    abi = shutil.copytree(resources.abi_dir(), tmp_path / "abi")
    sdk = sdk_copy(tmp_path)
    before = manifest(sdk, data_dirs=[abi])
    assert "sdk-data abi/proxy_wasm.yaml " in before
    edit(abi / "proxy_wasm.yaml")
    assert manifest(sdk, data_dirs=[abi]) != before


def test_every_build_tool_version_is_in_the_key(tmp_path):
    text = key_manifest("plugin", {}, {}, sdk_package=tmp_path, data_dirs=[])
    for tool in BUILD_TOOLS:
        assert f"tool {tool} " in text and f"tool {tool} missing" not in text
    assert "tool python " in text
    versions = build_cache.tool_versions()
    for tool in BUILD_TOOLS:
        other = dict(versions, **{tool: versions[tool] + ".1"})
        assert key_manifest("plugin", {}, {}, sdk_package=tmp_path, data_dirs=[], versions=other) != text


def test_build_options_are_checked_and_given_their_defaults():
    assert build_options({}) == {"debug": False, "keep_compiler": False}  # not progress, keep_temp
    assert build_options({"keep_compiler": True}) == {"debug": False, "keep_compiler": True}
    with pytest.raises(TypeError, match="unknown build option.*no_such_option"):
        build_options({"no_such_option": True})


def test_each_build_option_is_a_variant_of_the_key(tmp_path):
    folder = folder_plugin(tmp_path / "p")
    plain = build_key(folder)
    assert build_key(folder, keep_compiler=False, debug=False) == plain  # the defaults, given
    variants = {build_key(folder, keep_compiler=True), build_key(folder, debug=True),
                build_key(folder, keep_compiler=True, debug=True)}
    assert len(variants) == 3 and plain not in variants


def test_an_unchanged_plugin_is_not_rebuilt_because_a_test_file_changed(pywasm_build, tmp_path):
    built = pywasm_build(EXAMPLES / "http_headers")
    copy = shutil.copytree(EXAMPLES / "http_headers", tmp_path / "http_headers")
    (copy / "test_plugin.py").write_text("def test_it():\n    assert True\n")
    said: list[str] = []
    wasm, callbacks = cached_build(copy, said.append)
    assert wasm == built and said == [f"sources unchanged: using the cached build {built}"]
    assert "proxy_on_response_headers" in (callbacks or [])
    edit(copy / "test_plugin.py")
    assert cached_build(copy, said.append)[0] == built

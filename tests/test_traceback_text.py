"""The SDK's traceback text (pywasm_sdk._traceback) is what the standard library writes, bar the
column carets: checked against ``traceback.format_exception`` natively, for what plugins raise."""

from __future__ import annotations

import re
import sys
import traceback

import pytest

from pywasm_sdk import _traceback


def _standard(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    # the carets under a failing expression (3.11+): the SDK leaves them out
    return "".join(line for line in text.splitlines(keepends=True) if not re.fullmatch(r"\s*[~^]+\s*", line))


def _raised(make):
    try:
        make()
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("nothing raised")


def _plain():
    raise ValueError("bad value")


def _nested():
    def inner():
        return {}["missing"]
    return inner()


def _caused():
    try:
        _plain()
    except ValueError as exc:
        raise RuntimeError("while configuring") from exc


def _during():
    try:
        _plain()
    except ValueError:
        raise KeyError("x")


def _suppressed():
    try:
        _plain()
    except ValueError:
        raise TypeError("replaced") from None


def _with_note():
    exc = ValueError("noted")
    exc.add_note("first note")
    exc.add_note("second note")
    raise exc


class PluginError(Exception):
    pass


def _custom_empty():
    raise PluginError()


def _recursive(n=0):
    return _recursive(n + 1)


@pytest.mark.parametrize("make", [_plain, _nested, _caused, _during, _suppressed, _with_note, _custom_empty])
def test_the_text_is_the_standard_librarys(make):
    exc = _raised(make)
    assert _traceback.format_exception(exc) == _standard(exc)


def test_a_recursion_error_collapses_its_repeated_frames_as_the_standard_library_does():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        exc = _raised(_recursive)
    finally:
        sys.setrecursionlimit(limit)
    ours = _traceback.format_exception(exc)
    assert ours == _standard(exc)
    assert re.search(r"\[Previous line repeated \d+ more times\]", ours) and ours.count("\n") < 20


def test_an_exception_group_shows_each_of_its_exceptions():
    exc = _raised(lambda: (_ for _ in ()).throw(ExceptionGroup("two failed", [ValueError("a"), KeyError("b")])))
    text = _traceback.format_exception(exc)
    assert "ExceptionGroup: two failed (2 sub-exceptions)" in text
    assert "  | ValueError: a" in text and "  | KeyError: 'b'" in text


def test_a_broken_str_does_not_hide_the_exception():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no str")

    text = _traceback.format_exception(Broken())
    assert text.endswith("Broken: <exception str() failed>\n")


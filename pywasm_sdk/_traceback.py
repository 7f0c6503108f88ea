"""Tracebacks as text, without the standard library's ``traceback`` module.

In the CPython a plugin runs on (3.14), ``import traceback`` also imports ``_colorize``, and
with it ``dataclasses``, ``inspect``, ``ast``, ``dis``, ``annotationlib``, ``tokenize`` and
``re``: about 2 MB of objects that every plugin's snapshot would carry (and every VM of every
worker) only to print the rare exception. This module writes the same text as
``traceback.format_exception`` for what a plugin raises: frames with their source lines,
chained exceptions, notes, exception groups, and runs of one repeated frame collapsed (a
RecursionError's thousand frames). It leaves out the column carets.
"""

from __future__ import annotations

#: a run of the same frame (file, line, function) longer than this is shown once, then counted
_REPEATS_SHOWN = 3
#: how deep chained and grouped exceptions are followed
_MAX_DEPTH = 10

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_exception(exc: BaseException) -> str:
    """The text Python prints for an uncaught ``exc``, chained exceptions first."""
    return "".join(_chain(exc, set(), 0))


def _chain(exc: BaseException, seen: set[int], depth: int) -> list[str]:
    seen.add(id(exc))
    out: list[str] = []
    if depth < _MAX_DEPTH:
        cause, context = exc.__cause__, exc.__context__
        if cause is not None and id(cause) not in seen:
            out += _chain(cause, seen, depth + 1) + [_CAUSE]
        elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
            out += _chain(context, seen, depth + 1) + [_CONTEXT]
    return out + _one(exc, seen, depth)


def _one(exc: BaseException, seen: set[int], depth: int) -> list[str]:
    out = ["Traceback (most recent call last):\n"] if exc.__traceback__ is not None else []
    out += _frames(exc)
    out.append(_message(exc))
    group = getattr(exc, "exceptions", None)
    if isinstance(exc, BaseExceptionGroup) and group and depth < _MAX_DEPTH:
        for n, sub in enumerate(group, 1):
            text = "".join(_chain(sub, seen, depth + 1))
            out.append(f"  +---------------- {n} ----------------\n")
            out += [f"  | {line}\n" for line in text.splitlines()]
        out.append("  +------------------------------------\n")
    return out


def _frames(exc: BaseException) -> list[str]:
    # imported here: natively (Python 3.11) linecache imports tokenize and re, which a plugin
    # need not load; in the proxy it is in the snapshot already (_entry.finish_import)
    import linecache

    out: list[str] = []
    last: tuple[str, int, str] | None = None
    run = 0
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frame = (code.co_filename, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
        if frame == last:
            run += 1
            if run >= _REPEATS_SHOWN:
                continue
        else:
            out += _repeated(run)
            last, run = frame, 0
        filename, line, name = frame
        out.append(f'  File "{filename}", line {line}, in {name}\n')
        source = linecache.getline(filename, line).strip()
        if source:
            out.append(f"    {source}\n")
    return out + _repeated(run)


def _repeated(run: int) -> list[str]:
    hidden = run - _REPEATS_SHOWN + 1
    return [f"  [Previous line repeated {hidden} more time{'s' if hidden > 1 else ''}]\n"] if hidden > 0 else []


def _message(exc: BaseException) -> str:
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - a broken __str__ must not hide the exception
        text = "<exception str() failed>"
    line = f"{name}: {text}\n" if text else f"{name}\n"
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        line += "".join(f"{note}\n" for note in notes)
    return line

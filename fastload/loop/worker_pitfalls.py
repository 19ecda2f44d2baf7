"""What goes wrong when worker processes start, said exactly, with the fix.

- A transform that spawned workers cannot receive: ``spawn`` and ``forkserver`` pickle it
  (a lambda, a nested function, a bound method of a local class or an object holding a
  lock cannot be pickled; a function defined in ``python -c``, a REPL or a notebook
  pickles but cannot be imported by the worker, and so does one the main script defines
  only under ``if __name__ == "__main__":``). Checked before any process starts.
- A script without ``if __name__ == "__main__":``: every spawned worker imports the main
  script, so its top-level code builds a loader and starts workers again, inside a worker
  that is still starting. That worker stops with ``UNGUARDED_MAIN_EXIT`` and says why on
  stderr; the loader's error says so too.
"""

from __future__ import annotations

import ast
import multiprocessing
import pickletools
import sys
from collections.abc import Callable
from typing import Any

from fastload.errors import WorkerError

UNGUARDED_MAIN_EXIT = 77  # the exit code of a worker that found its own start re-entered

_FIXES = (
    "define the transform as a function at the top level of a module (not a lambda, a "
    "nested function, or a method of a class defined inside a function), or start the "
    "workers with fork: LoaderOptions().use_fork() (multiprocessing_context='fork')"
)
_GUARD = (
    "put the code that builds and iterates the loader under "
    '`if __name__ == "__main__":` (every spawned worker imports the main script and runs '
    "its top-level code), or start the workers with fork: LoaderOptions().use_fork()"
)


def _name(transform: Callable[..., Any]) -> str:
    return getattr(transform, "__qualname__", None) or type(transform).__qualname__


def check_transform_reaches_workers(transform: Callable[..., Any], context: str) -> None:
    """Raise WorkerError saying why and how to fix it when ``context`` workers cannot get
    ``transform`` (fork workers inherit it: always fine)."""
    if context == "fork":
        return
    from multiprocessing.reduction import ForkingPickler

    try:
        data = bytes(ForkingPickler.dumps(transform))
    except Exception as exc:
        raise WorkerError(
            f"fastload: the dataset's transform {_name(transform)!r} cannot be sent to worker "
            f"processes: multiprocessing_context={context!r} pickles it, and pickling failed "
            f"({type(exc).__name__}: {exc}). To fix it, {_FIXES}"
        ) from exc
    module = getattr(transform, "__module__", None) or type(transform).__module__
    main = sys.modules.get("__main__")
    if module == "__main__" and not getattr(main, "__file__", None):
        raise WorkerError(
            f"fastload: the dataset's transform {_name(transform)!r} is defined in __main__ of "
            "an interactive session (python -c, a REPL or a notebook), which worker processes "
            f"started with {context!r} cannot import. To fix it, {_FIXES}"
        )
    _check_main_names(transform, context, data, getattr(main, "__file__", None))


def _check_main_names(transform: Any, context: str, data: bytes, script: str | None) -> None:
    """WorkerError when the pickled transform refers to a name of the main script that only
    its ``if __name__ == "__main__":`` block defines: a spawned worker imports the script
    without running that block, so it could not unpickle the transform."""
    wanted = _main_globals(data)
    if not wanted or not script:
        return
    try:
        with open(script, "rb") as f:
            tree = ast.parse(f.read(), script)
    except (OSError, SyntaxError, ValueError):
        return  # not a script we can read: the worker's own error will say what failed
    top: set[str] = set()
    guarded: set[str] = set()
    for stmt in tree.body:
        (guarded if _is_main_guard(stmt) else top).update(_bound_names(stmt))
    for name in sorted(wanted):
        if name in guarded and name not in top:
            own = _name(transform).split(".")[0] == name
            what = "is one" if own else f"needs {name!r}, one"
            raise WorkerError(
                f"fastload: the dataset's transform {_name(transform)!r} {what} that {script} "
                f'defines only under `if __name__ == "__main__":`; worker '
                f"processes started with {context!r} import the script without running that "
                f"block, so they could not unpickle it. To fix it, define {name!r} at the top "
                "level of the script (above the guard) or in a module, or start the workers "
                "with fork: LoaderOptions().use_fork()"
            )


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_GETS = {"BINGET", "LONG_BINGET", "GET"}


def _main_globals(data: bytes) -> set[str]:
    """The top-level names of ``__main__`` a pickle refers to (its GLOBAL opcodes)."""
    found: set[str] = set()
    memo: dict[Any, Any] = {}
    pushed: list[Any] = []  # what each opcode pushed (None: not a string)
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in _STRINGS:
                pushed.append(arg)
            elif name in _GETS:
                pushed.append(memo.get(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                module, qual = str(arg).split(" ", 1) if name == "GLOBAL" else pushed[-2:]
                if module == "__main__" and isinstance(qual, str):
                    found.add(qual.split(".")[0])
                pushed.append(None)
            else:
                pushed.append(None)
    except Exception:  # not a pickle this walk understands: nothing to say
        return set()
    return found


def _is_main_guard(stmt: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare):
        return False
    sides = [stmt.test.left, *stmt.test.comparators]
    return any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides) and any(
        isinstance(x, ast.Constant) and x.value == "__main__" for x in sides
    )


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds (walking into its blocks: ifs, trys, loops)."""
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def refuse_start_while_bootstrapping(context: str) -> None:
    """In a spawned process that is still importing the main script: stop, saying why."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
        print(
            f"fastload: this {context} worker process is importing {main}, whose top-level "
            f"code starts a DataLoader's worker processes again. To fix it, {_GUARD}.",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(UNGUARDED_MAIN_EXIT)


def start_failure_hint(code: int | None, context: str) -> str:
    """Why a worker that exited with ``code`` while starting probably did, and what to do."""
    if code == UNGUARDED_MAIN_EXIT:
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
        return (
            f": it imported {main}, whose top-level code starts worker processes again; "
            f"to fix it, {_GUARD}"
        )
    if context != "fork" and code == 1:
        return (
            f" (a {context} worker first imports the main module and unpickles the transform; "
            "the traceback it printed on stderr says which failed)"
        )
    return ""

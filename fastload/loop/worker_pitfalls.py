"""What goes wrong when worker processes start, said exactly, with the fix.

- A transform that spawned workers cannot receive: ``spawn`` and ``forkserver`` pickle it
  (a lambda, a nested function, a bound method of a local class or an object holding a
  lock cannot be pickled; a function defined in ``python -c``, a REPL or a notebook
  pickles but cannot be imported by the worker). Checked before any process starts.
- A script without ``if __name__ == "__main__":``: every spawned worker imports the main
  script, so its top-level code builds a loader and starts workers again, inside a worker
  that is still starting. That worker stops with ``UNGUARDED_MAIN_EXIT`` and says why on
  stderr; the loader's error says so too.
"""

from __future__ import annotations

import multiprocessing
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
        ForkingPickler.dumps(transform)
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

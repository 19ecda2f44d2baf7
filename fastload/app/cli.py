"""`python -m fastload` / `fastload`: copy, inspect and benchmark objects; index tar shards;
profile a loader; a demo.

Verbs: ``get URI [-o FILE|-]``, ``ls PREFIX``, ``stat URI``, ``bench URI``, ``index URI...``,
``profile DATASET_URI``, ``demo``. Every
verb that reads storage takes the S3 settings ``--endpoint-url``, ``--profile``, ``--region``
and ``--no-sign-request`` (else they come the way the AWS tools find them). A missing
object or a refusal is one line naming the URI ("not found", "access denied"), never a
traceback; ``get -o - | head`` ends quietly when the reader goes away.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from fastload.app import profile
from fastload.app.arguments import count, size_arg
from fastload.app.progress import Progress, human_bytes
from fastload.app.transfer import read_in_chunks
from fastload.errors import FastloadError
from fastload.storage.engine import RangeEngine
from fastload.storage.read_settings import MAX_INFLIGHT_PARTS
from fastload.storage.uri import ParsedURI, parse_uri

MIB = 1 << 20
MAX_CHUNK = 64 * MIB  # get/bench hold three chunks, whatever the object's size
EXIT_SIGPIPE = 128 + 13


class CommandError(Exception):
    """A command that cannot run as asked (an output folder that is missing ...): one line."""


def _check_output(path: str) -> None:
    """Refuse, before anything is read, an output the command could not write."""
    if path == "-":
        return
    if os.path.isdir(path):
        raise CommandError(f"cannot write {path}: it is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"cannot write {path}: the folder {folder} is not writable")


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """The S3 settings given on the command line (the others come from the environment)."""
    opts: dict[str, Any] = {}
    if args.endpoint_url:
        opts["endpoint_url"] = args.endpoint_url
    if args.profile:
        opts["profile"] = args.profile
    if args.region:
        opts["region"] = args.region
    if args.no_sign_request:
        opts["anonymous"] = True
    return opts


def _engine(args: argparse.Namespace) -> RangeEngine:
    return RangeEngine(
        part_size=getattr(args, "part_size", 8 * MIB),
        max_inflight_parts=getattr(args, "inflight", None),
        page_cache_mode=getattr(args, "page_cache_mode", "auto"),
        **_storage_options(args),
    )


def _chunk(eng: RangeEngine, src: ParsedURI) -> int:
    """Bytes per chunk: every part in flight at once, up to MAX_CHUNK."""
    part = eng.settings.part_size_for(src.scheme)
    return max(part, min(part * eng.inflight_for(src.scheme), MAX_CHUNK))


def _live_bytes(eng: RangeEngine, src: ParsedURI) -> Any:
    """Bytes the backend has received since now (its native counters), for the progress bar."""
    backend = eng.backend(src.scheme)
    if not hasattr(backend, "stats"):
        return None
    base = int(backend.stats().get("bytes", 0))
    return lambda: int(backend.stats().get("bytes", 0)) - base


def cmd_get(args: argparse.Namespace) -> int:
    src = parse_uri(args.uri)
    with _engine(args) as eng:
        target = args.output or os.path.basename(src.path.rstrip("/")) or "download.bin"
        _check_output(target)
        size = eng.size(src)
        to_stdout = target == "-"
        label = src.display if to_stdout else os.path.basename(target)
        try:
            out = sys.stdout.buffer if to_stdout else open(target + ".part", "wb")
        except OSError as exc:
            raise CommandError(f"cannot write {target}: {exc.strerror}") from None
        progress = Progress(size, label, live=_live_bytes(eng, src))

        def take(view: memoryview) -> None:
            out.write(view)
            progress.update(len(view))

        try:
            read_in_chunks(eng, src, size, eng.settings, _chunk(eng, src), take)
            out.flush()
        except BaseException:
            if not to_stdout:
                out.close()
                os.unlink(target + ".part")  # never leave a partial file under the real name
            raise
        finally:
            progress.close()
        if not to_stdout:
            out.close()
            os.replace(target + ".part", target)
    if not to_stdout:
        print(f"{src.display} -> {target}: {size} bytes", file=sys.stderr)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with _engine(args) as eng:
        for uri in eng.list(args.prefix):
            print(uri)
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    src = parse_uri(args.uri)
    with _engine(args) as eng:
        backend = eng.backend(src.scheme)
        info = backend.stat(src) if hasattr(backend, "stat") else {"size": eng.size(src)}
    print(src.display)
    print(f"  size: {info['size']} bytes ({human_bytes(info['size'])})")
    if info.get("etag"):
        print(f"  etag: {info['etag']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    src = parse_uri(args.uri)
    with _engine(args) as eng:
        size = eng.size(src)
        chunk = _chunk(eng, src)
        best = float("inf")
        for i in range(args.repeat):
            t = time.perf_counter()
            read_in_chunks(eng, src, size, eng.settings, chunk, lambda view: None)
            dt = time.perf_counter() - t
            best = min(best, dt)
            print(f"run {i + 1}: {size / dt / 1e6:10.1f} MB/s  ({dt * 1e3:.1f} ms)")
        print(
            f"best: {size / best / 1e6:.1f} MB/s over {size} bytes "
            f"(part_size={eng.part_size}, max_inflight_parts={eng.inflight_for(src.scheme)}, "
            f"in chunks of {human_bytes(min(chunk, size))}, 2 in flight)"
        )
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from fastload.plan.tar_index import write_index

    _check_output(args.output)
    t = time.perf_counter()
    with _engine(args) as eng:
        shards = write_index(eng, args.uris, args.output)
    members = sum(len(s) for s in shards)
    print(
        f"{args.output}: {len(shards)} shards, {members} members ({time.perf_counter() - t:.2f} s)",
        file=sys.stderr,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fastload.app.demo import run_demo, run_jpeg_demo

    demo = run_jpeg_demo if args.mode == "jpeg" else run_demo
    demo(root=args.dir, epochs=args.epochs, n_images=args.images, batch_size=args.batch_size)
    return 0


def _version() -> str:
    from fastload import __version__  # the package root: imported by the time a verb runs

    return f"fastload {__version__}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastload", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=_version())
    p.add_argument(
        "--debug",
        action="store_true",
        help="on a failure, print the Python traceback (also: FASTLOAD_DEBUG=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    storage = argparse.ArgumentParser(add_help=False)
    s3 = storage.add_argument_group("S3 (default: the AWS environment variables and profile)")
    s3.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:9000")
    s3.add_argument("--profile", help="profile of ~/.aws/credentials and ~/.aws/config")
    s3.add_argument("--region", help="S3 region (us-east-1)")
    s3.add_argument(
        "--no-sign-request", action="store_true", help="send S3 requests unsigned (public data)"
    )

    reads = argparse.ArgumentParser(add_help=False)
    reads.add_argument("--part-size", type=size_arg, default=8 * MIB, help="bytes per part (8MiB)")
    reads.add_argument(
        "--inflight",
        type=count(1, MAX_INFLIGHT_PARTS),
        default=None,
        help="parts in flight (default: 4 for files, 32 for http(s)/s3)",
    )
    reads.add_argument(
        "--page-cache-mode",
        default="auto",
        choices=["auto", "sequential", "random", "dont_need", "normal"],
    )

    demo = sub.add_parser("demo", help="write a synthetic image dataset and load it")
    demo.add_argument("--dir", default=None, help="where to write it (a temp folder)")
    demo.add_argument("--epochs", type=count(1), default=3)
    demo.add_argument(
        "--mode",
        choices=["records", "jpeg"],
        default="records",
        help="records: raw image records; jpeg: a JPEG class folder, decoded and augmented",
    )
    demo.add_argument("--images", type=count(1), default=2000)
    demo.add_argument("--batch-size", type=count(1), default=64)
    demo.set_defaults(func=cmd_demo)

    get = sub.add_parser("get", parents=[reads, storage], help="copy an object to a file")
    get.add_argument("uri")
    get.add_argument(
        "-o", "--output", help="target file, '-' for stdout (default: the object's name)"
    )
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", parents=[storage], help="list the objects under a prefix")
    ls.add_argument("prefix", help="s3://bucket/prefix/ or a local folder")
    ls.set_defaults(func=cmd_ls)

    stat = sub.add_parser("stat", parents=[storage], help="an object's size (and ETag)")
    stat.add_argument("uri")
    stat.set_defaults(func=cmd_stat)

    bench = sub.add_parser(
        "bench", parents=[reads, storage], help="read an object with the engine, print MB/s"
    )
    bench.add_argument("uri")
    bench.add_argument("--repeat", type=count(1), default=3)
    bench.set_defaults(func=cmd_bench)

    index = sub.add_parser(
        "index",
        parents=[reads, storage],
        help="index tar shards (member offsets from their headers) into a sidecar file",
    )
    index.add_argument("uris", nargs="+", help="shards: URIs, prefixes or brace patterns")
    index.add_argument("-o", "--output", required=True, help="the index file to write")
    index.set_defaults(func=cmd_index)

    prof = sub.add_parser(
        "profile", help="load N batches, print where the time went and whether the step waits"
    )
    profile.add_arguments(prof)
    prof.set_defaults(func=profile.run)
    return p


def _shown_uri(exc: BaseException, args: argparse.Namespace) -> str:
    """The URI an error is about, as errors show it (no credentials)."""
    uri = getattr(exc, "uri", None) if isinstance(exc, FastloadError) else None
    if uri:
        return str(uri)
    if isinstance(exc, OSError) and exc.filename is not None:
        return str(exc.filename)
    given = getattr(args, "uri", None) or getattr(args, "prefix", None) or ""
    try:
        return parse_uri(given).display
    except ValueError:
        return "the URI given"


def describe_error(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for a failed command: what went wrong with which URI, no traceback."""
    status = getattr(exc, "http_status", None)
    suffix = f" (HTTP {status})" if status else ""
    if isinstance(exc, FileNotFoundError):
        return f"not found: {_shown_uri(exc, args)}{suffix}"
    if isinstance(exc, PermissionError):
        return f"access denied: {_shown_uri(exc, args)}{suffix}"
    return str(exc)


def _quiet_stdout() -> None:
    """After the reader of stdout went away: nothing more may reach it (not even a flush)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("FASTLOAD_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `fastload get URI -o - | head`: the reader has what it wanted
        _quiet_stdout()
        return EXIT_SIGPIPE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback (unless --debug)
        if debug:
            traceback.print_exc()
        known = isinstance(exc, (OSError, ValueError, TypeError, FastloadError, CommandError))
        text = describe_error(exc, args) if known else f"{type(exc).__name__}: {exc}"
        line = " ".join(text.split()) or type(exc).__name__  # one line, whatever the message
        hint = "" if known or debug else " (--debug shows the traceback)"  # a bug: say how
        print(f"fastload {args.command}: {line}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

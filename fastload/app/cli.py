"""`python -m fastload` / `fastload`: demo, get, bench, index and profile commands."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from fastload._native.buffer import AlignedBuffer
from fastload.app import profile
from fastload.app.progress import Progress
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import parse_uri

MIB = 1 << 20


def _size_arg(text: str) -> int:
    """Sizes like 8MiB, 512KiB, 4096."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (examples: 4096, 512KiB, 8MiB)"
        ) from None


def _engine(args: argparse.Namespace) -> RangeEngine:
    return RangeEngine(
        part_size=args.part_size,
        max_inflight_parts=args.inflight,
        page_cache_mode=args.page_cache_mode,
    )


def cmd_get(args: argparse.Namespace) -> int:
    with _engine(args) as eng:
        size = eng.size(args.uri)
        target = args.output or os.path.basename(args.uri.rstrip("/")) or "download.bin"
        chunk = max(args.part_size * eng.inflight_for(parse_uri(args.uri).scheme), 64 * MIB)
        buf = AlignedBuffer(min(chunk, max(size, 1)))
        view = memoryview(buf)
        progress = Progress(size, os.path.basename(target) if target != "-" else args.uri)
        out = sys.stdout.buffer if target == "-" else open(target + ".part", "wb")
        try:
            for off in range(0, size, len(buf)):
                n = min(len(buf), size - off)
                eng.read_ranges(args.uri, [(off, n)], buf)
                out.write(view[:n])
                progress.update(n)
        except BaseException:
            if out is not sys.stdout.buffer:
                out.close()
                os.unlink(target + ".part")  # never leave a partial file under the real name
            raise
        finally:
            progress.close()
        if out is not sys.stdout.buffer:
            out.close()
            os.replace(target + ".part", target)
    if target != "-":
        print(f"{args.uri} -> {target}: {size} bytes", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    with _engine(args) as eng:
        size = eng.size(args.uri)
        buf = AlignedBuffer(size)
        best = float("inf")
        for i in range(args.repeat):
            t = time.perf_counter()
            eng.read(args.uri, buf)
            dt = time.perf_counter() - t
            best = min(best, dt)
            print(f"run {i + 1}: {size / dt / 1e6:10.1f} MB/s  ({dt * 1e3:.1f} ms)")
    print(
        f"best: {size / best / 1e6:.1f} MB/s over {size} bytes "
        f"(part_size={args.part_size}, "
        f"max_inflight_parts={eng.inflight_for(parse_uri(args.uri).scheme)})"
    )
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from fastload.plan.tar_index import write_index

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
    from fastload.app.demo import run_demo

    run_demo(root=args.dir, epochs=args.epochs, n_images=args.images, batch_size=args.batch_size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastload", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def engine_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--part-size", type=_size_arg, default=8 * MIB, help="bytes per part (8MiB)"
        )
        sp.add_argument(
            "--inflight",
            type=int,
            default=None,
            help="parts in flight (default: 4 for files, 32 for http(s)/s3)",
        )
        sp.add_argument(
            "--page-cache-mode",
            default="auto",
            choices=["auto", "sequential", "random", "dont_need", "normal"],
        )

    demo = sub.add_parser("demo", help="write a synthetic image dataset and load it")
    demo.add_argument("--dir", default=None, help="where to write it (a temp folder)")
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--images", type=int, default=2000)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.set_defaults(func=cmd_demo)

    get = sub.add_parser("get", help="copy an object to a file")
    get.add_argument("uri")
    get.add_argument(
        "-o", "--output", help="target file, '-' for stdout (default: the object's name)"
    )
    engine_args(get)
    get.set_defaults(func=cmd_get)

    bench = sub.add_parser("bench", help="read an object with the engine and print MB/s")
    bench.add_argument("uri")
    bench.add_argument("--repeat", type=int, default=3)
    engine_args(bench)
    bench.set_defaults(func=cmd_bench)

    index = sub.add_parser(
        "index", help="index tar shards (member offsets from their headers) into a sidecar file"
    )
    index.add_argument("uris", nargs="+", help="shards: URIs, prefixes or brace patterns")
    index.add_argument("-o", "--output", required=True, help="the index file to write")
    engine_args(index)
    index.set_defaults(func=cmd_index)

    prof = sub.add_parser(
        "profile", help="load N batches, print where the time went and whether the step waits"
    )
    profile.add_arguments(prof)
    prof.set_defaults(func=profile.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, ValueError) as exc:
        print(f"fastload {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m iln_jax.pretrained {list,info,download,record} ...``: the official checkpoint registry.

    python -m iln_jax.pretrained list                       # every name: task, scale, arch, padding, source
    python -m iln_jax.pretrained info hat-x4                # one entry, and where its file goes (alias: show)
    python -m iln_jax.pretrained download swinir-classical-x2   # download, verify, convert once
    python -m iln_jax.pretrained record swinir-classical-x2     # pin size + sha256 of the cached copy
"""
from __future__ import annotations

import argparse
import dataclasses

from iln_jax.errors import run_cli
from iln_jax.pretrained.load import fetch, load_pretrained
from iln_jax.pretrained.registry import converted_path, download_path, entries, get, record


def _list(args) -> None:
    rows = [("name", "task", "arch/variant", "padding", "source", "cached")]
    for e in entries(args.cache_dir).values():
        task = f"{e.task} x{e.scale}" if e.task == "sr" else e.task + (
            f" sigma {e.noise_sigma:g}" if e.noise_sigma is not None else f" q{e.jpeg_quality}" if e.jpeg_quality else "")
        cached = "converted" if (converted_path(e, args.cache_dir) / "checkpoints").is_dir() else \
            "downloaded" if download_path(e, args.cache_dir).is_file() else ""
        rows.append((e.name, task, f"{e.arch}/{e.variant or '-'}", e.padding, "direct" if e.url else "by hand", cached))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _info(args) -> None:
    e = get(args.name, args.cache_dir)
    for f in dataclasses.fields(e):
        print(f"{f.name:14s} {getattr(e, f.name)!r}")
    print(f"{'constructor':14s} {e.constructor_kwargs()!r}")
    print(f"{'file goes to':14s} {download_path(e, args.cache_dir)}")
    print(f"{'converted in':14s} {converted_path(e, args.cache_dir)}")


def _download(args) -> None:
    loaded = load_pretrained(args.name, cache_dir=args.cache_dir, progress=not args.quiet)
    print(f"{args.name}: {loaded.arch} norm={loaded.norm}, ready in {converted_path(get(args.name, args.cache_dir), args.cache_dir)}")


def _record(args) -> None:
    e = get(args.name, args.cache_dir)
    path, digest = fetch(e, cache_dir=args.cache_dir, progress=not args.quiet, hint_unrecorded=False)
    size = path.stat().st_size
    where = record(args.name, size=size, sha256=digest, cache=args.cache_dir)
    print(f"recorded {args.name}: size={size}, sha256={digest} in {where}")
    print(f"to pin it for everyone, add to its entry in iln_jax/pretrained/zoo.py:  size={size}, sha256=\"{digest}\"")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m iln_jax.pretrained", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-dir", help="cache folder (default: $ILN_JAX_CACHE, else ~/.cache/iln_jax)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every registered model").set_defaults(run=_list)
    for command, aliases, run, text in (
            ("info", ["show"], _info, "one entry and its cache paths"),
            ("download", [], _download, "download (or find), verify and convert once"),
            ("record", [], _record, "write size and sha256 of the cached file to the local records")):
        sp = sub.add_parser(command, aliases=aliases, help=text)
        sp.add_argument("name")
        sp.set_defaults(run=run)
    args = p.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    run_cli("pretrained", main)

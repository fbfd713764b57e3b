"""``kdbts weights``: the released official checkpoints listed, or fetched into the cache
(:mod:`kdbts_ros.core.model.fetch`)."""

from __future__ import annotations

import argparse

from kdbts_ros.core.model.registry import RELEASES

HELP = (
    "list the released official BTS / MVBTS / KDBTS checkpoints, or download and import them into the cache "
    "(then usable by name as a checkpoint)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="names, sources and which are cached")
    get = actions.add_parser("get", help="download (progress bar), check, import into the cache; prints each path")
    get.add_argument("names", nargs="+", choices=RELEASES, metavar="NAME", help=f"one of {', '.join(RELEASES)}")
    get.add_argument("--url", help="base URL to download from instead of $KDBTS_WEIGHTS_URL or the authors' webshare")
    get.add_argument("--force", action="store_true", help="download again even when cached")


def run(args: argparse.Namespace) -> int:
    """List the releases with their cache state, or fetch the named ones and print their paths."""
    from kdbts_ros.core.model.registry import BASE_URL_ENV, CACHE_ENV, base_url, cache_dir, cached_path

    if args.action == "list":
        for r in RELEASES.values():
            state = str(cached_path(r.name)) if cached_path(r.name).is_file() else "not fetched"
            print(
                f"{r.name:16s} {r.model:6s} {r.dataset:10s} {state}\n{'':16s} {r.url()}"
                + (f" : {r.member}" if r.member else "")
            )
        print(f"cache: {cache_dir()} (${CACHE_ENV}); source: {base_url()} (${BASE_URL_ENV} or get --url)")
        return 0
    from kdbts_ros.core.model.fetch import fetch

    for _name, path in fetch(args.names, args.url, args.force):
        print(path)
    return 0

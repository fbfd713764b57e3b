#!/usr/bin/env python3
"""Rebuild the extra real KITTI training folder from local copies of public GitHub repositories.

Every row of ``data/kitti_extra/manifest.csv`` names a target file in the official KITTI layout, the
repository, commit and path it comes from, the git blob hash of the source file, an operation and the git
blob hash and size of the file to write:

- ``copy``: a byte copy (target blob = source blob);
- ``head:N``: the first N lines of the source, byte for byte;
- ``column:K:FMT:N``: column K (1-based, whitespace-separated) of the first N lines, each printed with
  the printf format FMT on its own line.

The repositories are looked up under ``--sources``: for ``owner/name`` an entry ``owner+name`` (as the
session's /work/.mirror snapshots: ``owner+name/repo`` or ``owner+name/repo/.git``), ``owner/name`` or
``name``, each either a git directory (bare or with a work tree) or a plain checkout without ``.git``.
Blobs are read with ``git cat-file`` by hash, so any clone that contains the commit works; when the
recorded commit is present, its ``commit:path`` must name that same blob.

Every written file's git blob hash is checked against the manifest. The script refuses (message on
stderr, exit status 1) on a missing repository, blob or file, a hash mismatch, or an existing target
file with other content; identical existing files are left alone. Nothing but the standard library
is used. KITTI is CC BY-NC-SA 3.0: the folder it writes is for training only and must not be committed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "data" / "kitti_extra" / "manifest.csv"
FIELDS = ("target", "kind", "repo", "commit", "source_path", "source_blob", "op", "target_blob", "target_size")


class FetchError(RuntimeError):
    """A source is missing or a hash does not match: the folder cannot be rebuilt as recorded."""


@dataclass(frozen=True)
class Row:
    """One manifest line: where a target file comes from and what it must hash to."""

    target: str
    kind: str
    repo: str
    commit: str
    source_path: str
    source_blob: str
    op: str
    target_blob: str
    target_size: int


def git_blob_hash(data: bytes) -> str:
    """The git object id of ``data`` as a blob (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_manifest(path: Path) -> list[Row]:
    """The manifest's rows; raises FetchError on a malformed file or an unsafe target path."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise FetchError(f"{path}: missing column(s) {missing}")
        rows = [Row(**{k: r[k] for k in FIELDS[:-1]}, target_size=int(r["target_size"])) for r in reader]
    for r in rows:
        p = Path(r.target)
        if p.is_absolute() or ".." in p.parts:
            raise FetchError(f"{path}: unsafe target path {r.target!r}")
    return rows


class Source:
    """One repository on disk: a git directory, or a plain checkout read by path."""

    def __init__(self, repo: str, root: Path):
        self.repo = repo
        self.git_dir: Path | None = None
        self.tree: Path | None = None
        for base in (root / repo.replace("/", "+"), root / repo, root / repo.split("/")[-1]):
            for cand in (base / "repo" / ".git", base / "repo", base / ".git", base):
                if (cand / "objects").is_dir() and (cand / "HEAD").is_file():
                    self.git_dir = cand
                    return
            if base.is_dir() and self.tree is None:
                self.tree = base
        if self.tree is None:
            raise FetchError(f"{repo}: no copy under {root} (looked for {repo.replace('/', '+')}, {repo})")

    def _git(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "--git-dir", str(self.git_dir), *args], capture_output=True, check=False)

    def read(self, row: Row) -> bytes:
        """The source file's bytes, checked against its recorded blob hash."""
        if self.git_dir is not None:
            found = self._git("rev-parse", "--verify", "--quiet", f"{row.commit}:{row.source_path}")
            if found.returncode == 0 and found.stdout.decode().strip() != row.source_blob:
                raise FetchError(
                    f"{self.repo}@{row.commit[:12]}:{row.source_path} is blob {found.stdout.decode().strip()}, "
                    f"the manifest says {row.source_blob}"
                )
            got = self._git("cat-file", "blob", row.source_blob)
            if got.returncode != 0:
                raise FetchError(f"{self.repo}: blob {row.source_blob} ({row.source_path}) not in {self.git_dir}")
            data = got.stdout
        else:
            assert self.tree is not None
            path = self.tree / row.source_path
            if not path.is_file():
                raise FetchError(f"{self.repo}: {path} not found")
            data = path.read_bytes()
        if git_blob_hash(data) != row.source_blob:
            raise FetchError(f"{self.repo}:{row.source_path}: content does not hash to {row.source_blob}")
        return data


def derive(row: Row, data: bytes) -> bytes:
    """Apply the row's operation to the source bytes."""
    op, *args = row.op.split(":")
    if op == "copy" and not args:
        return data
    if op == "head" and len(args) == 1:
        lines = data.splitlines(keepends=True)
        n = int(args[0])
        if len(lines) < n:
            raise FetchError(f"{row.repo}:{row.source_path} has {len(lines)} lines, fewer than {n}")
        return b"".join(lines[:n])
    if op == "column" and len(args) == 3:
        k, fmt, n = int(args[0]), args[1], int(args[2])
        lines = data.splitlines()[:n]
        if len(lines) < n:
            raise FetchError(f"{row.repo}:{row.source_path} has {len(lines)} lines, fewer than {n}")
        return b"".join((fmt % float(line.split()[k - 1])).encode() + b"\n" for line in lines)
    raise FetchError(f"unknown operation {row.op!r} for {row.target}")


def write_row(row: Row, data: bytes, out: Path) -> bool:
    """Write one target file atomically; False when an identical file is already there."""
    if len(data) != row.target_size or git_blob_hash(data) != row.target_blob:
        raise FetchError(f"{row.target}: derived content does not hash to {row.target_blob} ({row.target_size} B)")
    dest = out / row.target
    if dest.exists():
        if git_blob_hash(dest.read_bytes()) == row.target_blob:
            return False
        raise FetchError(f"{dest} exists with other content; not overwriting it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: rebuild (part of) the folder; 0 on success, 1 on any refusal."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("out", type=Path, help="folder to write (e.g. /work/data/kitti_extra); created if missing")
    ap.add_argument(
        "--sources",
        type=Path,
        default=Path("/work/.mirror"),
        help="folder holding the repositories' clones or snapshots (default: /work/.mirror)",
    )
    ap.add_argument(
        "--manifest", type=Path, default=DEFAULT_MANIFEST, help=f"manifest CSV (default: {DEFAULT_MANIFEST})"
    )
    ap.add_argument("--only", default="", help="only targets starting with this prefix (e.g. raw/2011_09_26/)")
    args = ap.parse_args(argv)
    try:
        rows = [r for r in read_manifest(args.manifest) if r.target.startswith(args.only)]
        if not rows:
            raise FetchError(f"no manifest row starts with {args.only!r}")
        sources: dict[str, Source] = {}
        written = kept = 0
        for row in rows:
            src = sources.get(row.repo) or sources.setdefault(row.repo, Source(row.repo, args.sources))
            if write_row(row, derive(row, src.read(row)), args.out):
                written += 1
            else:
                kept += 1
    except (FetchError, OSError, ValueError) as e:
        print(f"fetch_kitti_extra: refused: {e}", file=sys.stderr)
        return 1
    print(f"{len(rows)} files checked into {args.out}: {written} written, {kept} already identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Released checkpoints downloaded, checked and imported into the cache (``kdbts weights get``).

Everything is written to hidden ``.part`` files in the cache folder and only the checked,
imported project-format file is renamed into place, so a broken download (refused
connection, HTTP error, short body, corrupt or wrong archive, incomplete weights) leaves
nothing behind and a cached name always holds complete weights.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from kdbts_ros.core.errors import UserError
from kdbts_ros.core.model.registry import RELEASES, Release, cache_dir, cached_path

TIMEOUT_S = 60.0  # per socket operation, not for the whole download
CHUNK = 1 << 20


class FetchError(UserError, RuntimeError):
    """A release that could not be fetched; the message is one line saying why."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@contextlib.contextmanager
def _scratch(folder: Path, stem: str, suffix: str) -> Iterator[Path]:
    """A fresh hidden file name in ``folder`` (same file system, so the final rename is atomic), removed on exit."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=f"{suffix}.part")
    except OSError as exc:
        raise FetchError(f"cannot write in the cache folder {folder} ({exc})") from exc
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def download(url: str, dest: Path, release: Release) -> None:
    """Copy ``url`` into ``dest`` with a progress bar; checks length, and size and hash when known."""
    digest, got = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(dest, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1]) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise FetchError(f"{url}: cannot connect ({exc.reason})") from exc
    except ValueError as exc:  # urllib's answer to a malformed --url / $KDBTS_WEIGHTS_URL
        raise FetchError(f"{url}: not a URL ({exc})") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{url}: download broken off after {got} bytes ({exc or type(exc).__name__})") from exc
    # http.client returns a short body without complaint when the server closes early
    if total is not None and got != total:
        raise FetchError(f"{url}: download broken off: {got} of {total} bytes")
    if release.size is not None and got != release.size:
        raise FetchError(f"{url}: {got} bytes, the release's size is {release.size}")
    if release.sha256 is not None and digest.hexdigest() != release.sha256:
        raise FetchError(f"{url}: SHA-256 {digest.hexdigest()} differs from the release's {release.sha256}")


def extract_member(archive: Path, pattern: str, dest: Path, label: str) -> str:
    """Copy the one member of a zip archive matching ``pattern`` into ``dest``; returns its name.

    zipfile checks the member's CRC-32 while reading it, so a corrupt member fails here.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if len(found) != 1:
                checkpoints = [n for n in names if n.endswith(".pt")] or names
                raise FetchError(
                    f"{label}: {'no' if not found else 'more than one'} member {pattern} in the "
                    f"archive (it holds {', '.join(checkpoints[:6]) or 'nothing'})"
                )
            with zf.open(found[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise FetchError(f"{label}: corrupt zip archive ({exc})") from exc
    return found[0]


def import_release(pt: Path, out: Path, source: str, label: str, camera: str) -> str:
    """Import an official .pt (trained in the official ``camera``) into the project format at ``out`` if it loads
    completely; returns a summary."""
    from kdbts_ros.core.model.checkpoint import CheckpointError
    from kdbts_ros.core.model.official import import_official, save_imported

    try:
        model, report = import_official(pt)
    except CheckpointError as exc:
        raise FetchError(f"{label}: not the expected checkpoint ({exc})") from exc
    if not report.complete:
        raise FetchError(
            f"{label}: refusing a partially loaded network: heads {report.heads}, "
            f"unexpected keys {report.unexpected[:3]}, missing keys {report.missing[:3]}"
        )
    try:
        save_imported(out, model, report, source, camera)
    except OSError as exc:
        raise FetchError(f"{label}: cannot write {out} ({exc})") from exc
    return f"{report.architecture.backbone}, {report.mapped} tensors, heads {', '.join(report.heads)}"


def fetch(
    names: list[str], base: str | None = None, force: bool = False, note: Callable[[str], None] = _stderr
) -> Iterator[tuple[str, Path]]:
    """Yield (name, cached file) for each release name, downloading and importing what is not cached yet
    (everything with ``force``); an archive holding several of the names is downloaded once.

    Raises FetchError at the first failure; files finished before it stay, complete.
    """
    unknown = [n for n in names if n not in RELEASES]
    if unknown:
        raise FetchError(f"unknown weights {', '.join(unknown)}; known: {', '.join(RELEASES)}")
    todo: dict[str, list[Release]] = {}
    for name in dict.fromkeys(names):
        if cached_path(name).is_file() and not force:
            note(f"{name}: cached")
            yield name, cached_path(name)
        else:
            todo.setdefault(RELEASES[name].url(base), []).append(RELEASES[name])
    if not todo:
        return
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the cache folder {folder} ({exc})") from exc
    for url, releases in todo.items():
        stem = url.rsplit("/", 1)[-1]
        with _scratch(folder, stem, "") as download_file:
            download(url, download_file, releases[0])
            for release in releases:
                yield release.name, _install(release, url, download_file, folder, note)


def _install(release: Release, url: str, download_file: Path, folder: Path, note: Callable[[str], None]) -> Path:
    """Extract (archives), import and atomically place one release; returns its cached file."""
    final = cached_path(release.name)
    archive = release.member is not None
    with (
        _scratch(folder, release.name, ".pt") if archive else contextlib.nullcontext(download_file) as pt,
        _scratch(folder, release.name, ".safetensors") as out,
    ):
        source = url
        if release.member is not None:  # archive
            source = f"{url}:{extract_member(download_file, release.member, pt, f'{release.name} ({url})')}"
        summary = import_release(pt, out, source, f"{release.name} ({source})", release.camera)
        try:
            os.replace(out, final)  # atomic: the cached name holds the old file or the new one, never a mix
        except OSError as exc:
            raise FetchError(f"{release.name}: cannot write {final} ({exc})") from exc
    note(f"{release.name}: {release.model} trained on {release.dataset}: {summary}")
    return final

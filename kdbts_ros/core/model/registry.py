"""The released official checkpoints by name, and the per-user cache their imported files live in.

Names, file locations and archive layouts come from the official download scripts
(``download_checkpoint.sh`` of github.com/keonhee-han/KDBTS and github.com/Brummi/BehindTheScenes)
and the paths their configs load. Nothing here imports torch or ROS: the node and the
tools resolve a name to a file without loading anything, and never download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# the authors' webshare; both download scripts fetch from below it
OFFICIAL_BASE_URL = "https://cvg.cit.tum.de/webshare/g/behindthescenes"
BASE_URL_ENV = "KDBTS_WEIGHTS_URL"  # a mirror, or a local server in tests
CACHE_ENV = "KDBTS_CACHE_DIR"  # the cache folder itself, instead of the XDG location


@dataclass(frozen=True)
class Release:
    """One released network: where it is published and how to find the checkpoint in what is downloaded."""

    name: str
    model: str  # BTS, MVBTS or KDBTS
    dataset: str  # what it was trained on
    path: str  # below the base URL
    # zip archives: an fnmatch pattern that exactly one member must match (the archives' layout is read from
    # the official configs, not from a listing, so a leading folder is tolerated); None: the file is the .pt
    member: str | None
    # of the download (the same for every release of one archive), when published
    size: int | None = None
    sha256: str | None = None

    @property
    def camera(self) -> str:
        """The official training camera of its data set (a key of ``official.OFFICIAL_CAMERAS``)."""
        return "kitti-360" if self.dataset == "KITTI-360" else "kitti-raw"

    def url(self, base: str | None = None) -> str:
        """Where to download it from: ``base``, else $KDBTS_WEIGHTS_URL, else the authors' webshare."""
        return f"{(base or base_url()).rstrip('/')}/{self.path}"


# The authors publish neither sizes nor hashes; the zip's CRCs and the import's key check stand in for them.
RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("kitti-360", "KDBTS", "KITTI-360", "kdbts/kitti_360.zip", "*kdbts/training_checkpoint_*.pt"),
        Release("kitti-raw", "KDBTS", "KITTI raw", "kdbts/kitti_raw.zip", "*kdbts/training_checkpoint_*.pt"),
        Release("mvbts-kitti-360", "MVBTS", "KITTI-360", "kdbts/kitti_360.zip", "*mvbts/training_checkpoint_*.pt"),
        Release("mvbts-kitti-raw", "MVBTS", "KITTI raw", "kdbts/kitti_raw.zip", "*mvbts/training_checkpoint_*.pt"),
        Release("bts-kitti-360", "BTS", "KITTI-360", "kitti-360/training-checkpoint.pt", None),
        Release("bts-kitti-raw", "BTS", "KITTI raw", "kitti/training-checkpoint.pt", None),
    )
}


def base_url() -> str:
    """$KDBTS_WEIGHTS_URL, else the authors' webshare."""
    return os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL


def cache_dir() -> Path:
    """$KDBTS_CACHE_DIR, else $XDG_CACHE_HOME/kdbts_ros, else ~/.cache/kdbts_ros (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says a relative value is invalid and to be ignored
    root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "kdbts_ros"


def cached_path(name: str) -> Path:
    """The project-format file a release name is imported to."""
    return cache_dir() / f"{name}.safetensors"


def release_file(spec: str | Path) -> Path | None:
    """The cache file a checkpoint setting names when it is a release name (fetched or not), else None.

    A name always means the release; a file called like one is reached as ``./NAME``.
    """
    return cached_path(spec) if isinstance(spec, str) and spec in RELEASES else None

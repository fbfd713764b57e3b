#!/usr/bin/env python3
"""Checks of the extra KITTI folder written by tools/fetch_kitti_extra.py (the numbers in data/kitti_extra/README.md).

- every file's git blob hash against the manifest; every PNG decodes, with its size and channels per folder;
- frame order: for every frame k, NCC(k, k+1) > NCC(k, k+3) (half resolution);
- stereo pairing: each right frame k is matched (OpenCV SGBM) against left frames k-2..k+2 and warped onto
  them; its own left frame must give the smallest photometric error;
- colour frame k against grey frames k-2..k+2 of the same side (NCC, small shift search), where both cameras
  are here: its own grey frame must match best (the four cameras share one trigger);
- raw drives: timestamps (spacing, OXTS against image_00) and OXTS positions against the OXTS speed;
- odometry: poses (orthonormal rotations, step lengths) and the calib's P0-P3 against the 2011_09_26 raw
  calibration (sequence 03 is the 2011_09_26 drive 0067).

Needs numpy and OpenCV (the package's runtime dependencies). ``--quick`` skips the slow SGBM pairing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "data" / "kitti_extra" / "manifest.csv"


def grey(path: Path, half: bool = True) -> np.ndarray:
    """The image as float32 grey (colour converted), optionally at half resolution."""
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise ValueError(f"{path} does not decode")
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
    a = a.astype(np.float32)
    return cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA) if half else a


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two equal-sized images."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def check_files(root: Path, rows: list[dict[str, str]]) -> dict[str, list[Path]]:
    """Hashes and decoding; returns the image folders and their files."""

    def blob_hash(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    bad = [r["target"] for r in rows if blob_hash((root / r["target"]).read_bytes()) != r["target_blob"]]
    print(f"hashes: {len(rows) - len(bad)}/{len(rows)} files match the manifest {bad[:3]}")
    folders: dict[str, list[Path]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "image":
            folders[str(Path(r["target"]).parent)].append(root / r["target"])
    for d, files in sorted(folders.items()):
        files.sort()
        shapes = {cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape for f in files}
        idx = [int(f.stem) for f in files]
        gaps = "" if idx == list(range(idx[0], idx[0] + len(idx))) else " GAPS"
        print(f"{d}: {len(files)} PNGs decode, frames {idx[0]}-{idx[-1]}{gaps}, shape(s) {sorted(shapes)}")
    return folders


def check_order(folders: dict[str, list[Path]]) -> None:
    """NCC(k, k+1) > NCC(k, k+3) for every k."""
    for d, files in sorted(folders.items()):
        s = [grey(f) for f in files]
        if len(s) < 4:
            continue
        c1 = [ncc(s[k], s[k + 1]) for k in range(len(s) - 1)]
        bad = [k for k in range(len(s) - 3) if not c1[k] > ncc(s[k], s[k + 3])]
        print(f"order {d}: {len(bad)} exceptions in {len(s) - 3}; NCC(k,k+1) {min(c1):.3f}-{max(c1):.3f}")


def warp_error(left: np.ndarray, right: np.ndarray, sgbm: cv2.StereoSGBM) -> float:
    """Mean absolute grey difference of the right image warped onto the left by SGBM's disparity."""
    d = sgbm.compute(left, right).astype(np.float32) / 16.0
    h, w = left.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(right, xs - d, ys, cv2.INTER_LINEAR)
    valid = (d > 0.5) & (xs - d > 0) & (xs >= 100)
    return float(np.abs(left.astype(np.float32) - warped)[valid].mean())


def stereo_pairs(folders: dict[str, list[Path]]) -> list[tuple[str, dict[int, Path], dict[int, Path]]]:
    """(name, left frames, right frames) of every stereo pair of folders."""
    out = []
    for d in sorted(folders):
        for left, right in (
            ("image_00", "image_01"),
            ("image_02", "image_03"),
            ("image_0", "image_1"),
            ("image_2", "image_3"),
        ):
            parts = Path(d).parts
            if left in parts and str(Path(d)).replace(f"/{left}", f"/{right}") in folders:
                rd = str(Path(d)).replace(f"/{left}", f"/{right}")
                out.append(
                    (f"{d} / {right}", {int(f.stem): f for f in folders[d]}, {int(f.stem): f for f in folders[rd]})
                )
    return out


def check_stereo(folders: dict[str, list[Path]]) -> None:
    """Each right frame warps best onto its own left frame."""
    sgbm = cv2.StereoSGBM_create(
        0, 96, 7, P1=8 * 49, P2=32 * 49, uniquenessRatio=10, speckleWindowSize=50, speckleRange=2
    )
    for name, lf, rf in stereo_pairs(folders):
        ok, own, other = 0, [], []
        for k in sorted(set(lf) & set(rf)):
            r = cv2.imread(str(rf[k]), cv2.IMREAD_GRAYSCALE)
            err = {
                j: warp_error(cv2.imread(str(lf[j]), cv2.IMREAD_GRAYSCALE), r, sgbm)
                for j in range(k - 2, k + 3)
                if j in lf
            }
            best = min(err, key=err.__getitem__)
            ok += best == k
            own.append(err[k])
            if best != k:
                other.append((k, best, round(err[k] - err[best], 2)))
        print(
            f"stereo {name}: {ok}/{len(own)} right frames warp best onto their own left frame "
            f"(error {np.mean(own):.2f} grey levels); otherwise (frame, best, margin): {other[:6]}"
        )


def check_colour_grey(folders: dict[str, list[Path]]) -> None:
    """Colour frame k matches grey frame k of the same side best (raw image_02/03 vs 00/01, odometry 2/3 vs 0/1)."""

    def best_shift(a: np.ndarray, b: np.ndarray, m: int = 12) -> float:
        h, w = a.shape
        return max(
            ncc(a[h // 4 : 3 * h // 4, m : w - m], b[h // 4 : 3 * h // 4, m - s : w - m - s]) for s in range(-m, m + 1)
        )

    sides = (("image_02", "image_00"), ("image_03", "image_01"), ("image_2", "image_0"), ("image_3", "image_1"))
    for d in sorted(folders):
        for colour, grey_cam in sides:
            parts = list(Path(d).parts)
            if colour not in parts:
                continue
            parts[parts.index(colour)] = grey_cam
            gd = str(Path(*parts))
            if gd not in folders:
                continue
            g = {int(f.stem): grey(f) for f in folders[gd]}
            ok, bad, n = 0, [], 0
            for f in folders[d]:
                if int(f.stem) not in g:
                    continue
                n += 1
                k, c = int(f.stem), grey(f)
                score = {j: best_shift(c, g[j]) for j in range(k - 2, k + 3) if j in g}
                best = max(score, key=score.__getitem__)
                ok += best == k
                if best != k:
                    bad.append((k, best))
            print(
                f"sync {d} vs {grey_cam}: {ok}/{n} colour frames match their own grey frame best; "
                f"otherwise (frame, best): {bad[:5]}"
            )


def stamps(path: Path) -> np.ndarray:
    """KITTI raw timestamps (one 'YYYY-MM-DD hh:mm:ss.nnnnnnnnn' per line) as seconds."""
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    return np.array([dt.datetime.fromisoformat(x[:26]).replace(tzinfo=dt.timezone.utc).timestamp() for x in lines])


def check_raw_motion(root: Path) -> None:
    """Timestamps and OXTS of each raw drive."""
    for drive in sorted(root.glob("raw/*/*_sync")):
        packets = {int(p.stem): np.array(p.read_text().split(), float) for p in (drive / "oxts" / "data").glob("*.txt")}
        ks = sorted(packets)
        lat = np.array([packets[k][0] for k in ks])
        scale = np.cos(np.radians(lat[0]))
        east = scale * 6378137.0 * np.radians([packets[k][1] for k in ks])
        north = scale * 6378137.0 * np.log(np.tan(np.radians(90.0 + lat) / 2.0))
        step = np.hypot(np.diff(east), np.diff(north))
        cam = next(
            c for c in ("image_00", "image_01", "image_02", "image_03") if (drive / c / "timestamps.txt").is_file()
        )
        t_img, t_ox = stamps(drive / cam / "timestamps.txt"), stamps(drive / "oxts" / "timestamps.txt")
        speed = np.array([np.hypot(packets[k][8], packets[k][9]) for k in ks])
        dtk = np.diff(t_img[ks])
        pred = 0.5 * (speed[:-1] + speed[1:]) * dtk
        first = (drive / cam / "timestamps.txt").read_text().split("\n")[0]
        print(
            f"motion {drive.name}: {len(t_img)} timestamp lines, first {first}; "
            f"spacing {dtk.min():.3f}-{dtk.max():.3f} s; "
            f"|t_oxts - t_{cam}| <= {np.abs(t_ox[ks] - t_img[ks]).max() * 1e3:.1f} ms; path {step.sum():.1f} m, "
            f"speed {speed.min():.1f}-{speed.max():.1f} m/s; |step - speed*dt| <= {np.abs(step - pred).max():.3f} m"
        )


def read_labelled(path: Path) -> dict[str, np.ndarray]:
    """'KEY: numbers' lines (KITTI calib files)."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(":")
        if sep:
            with contextlib.suppress(ValueError):  # a text entry such as calib_time
                out[key.strip()] = np.array(rest.split(), float)
    return out


def check_odometry(root: Path) -> None:
    """Poses and calibration of the odometry sequences."""
    raw = {p.parent.name: read_labelled(p) for p in root.glob("raw/*/calib_cam_to_cam.txt")}
    for seq in sorted(root.glob("odometry/sequences/*")):
        P = np.loadtxt(root / "odometry" / "poses" / f"{seq.name}.txt").reshape(-1, 3, 4)
        orth = max(np.abs(r.T @ r - np.eye(3)).max() for r in P[:, :, :3])
        steps = np.linalg.norm(np.diff(P[:, :, 3], axis=0), axis=1)
        times = np.loadtxt(seq / "times.txt", ndmin=1)
        cal = read_labelled(seq / "calib.txt")
        same = {d: max(np.abs(cal[f"P{i}"] - c[f"P_rect_0{i}"]).max() for i in range(4)) for d, c in raw.items()}
        print(
            f"odometry {seq.name}: {len(P)} poses, rotations orthonormal to {orth:.1e}, steps {steps.min():.3f}-"
            f"{steps.max():.3f} m; {len(times)} times, "
            f"spacing {np.diff(times).min():.4f}-{np.diff(times).max():.4f} s; "
            f"fx {cal['P0'][0]:.4f}, baseline {-cal['P1'][3] / cal['P1'][0]:.4f} m; "
            "max |P0-P3 - raw P_rect_00-03|: " + ", ".join(f"{d} {v:.4g}" for d, v in same.items())
        )


def main() -> None:
    """Run every check and print one line per folder or pair."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="the folder tools/fetch_kitti_extra.py wrote")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    ap.add_argument("--quick", action="store_true", help="skip the SGBM stereo pairing (minutes on two cores)")
    args = ap.parse_args()
    with args.manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    folders = check_files(args.root, rows)
    check_order(folders)
    if not args.quick:
        check_stereo(folders)
    check_colour_grey(folders)
    check_raw_motion(args.root)
    check_odometry(args.root)


if __name__ == "__main__":
    main()

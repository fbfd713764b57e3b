"""Image files read and written with errors that name the file.

``cv2.imread`` / ``cv2.imwrite`` only say None / False, whether the file is missing, not an
image, or the disk is full; here the bytes go through Python's own file calls, so a missing
folder or a full disk is an OSError with its errno and file name.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kdbts_ros.core.errors import UserError


def read_bgr_image(path: str | Path) -> np.ndarray:
    """BGR uint8 (H, W, 3) of an image file (any format cv2 decodes)."""
    data = np.frombuffer(Path(path).read_bytes(), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise UserError(f"{path}: not an image (no format cv2 can decode)")
    return img


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write an image in the format its file extension names (.png, .jpg, ...)."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix, img)
    except cv2.error as exc:  # no encoder for the extension
        raise UserError(f"{path}: cannot write an image with extension {path.suffix!r} (use .png or .jpg)") from exc
    if not ok:
        raise UserError(f"{path}: cannot encode the image as {path.suffix!r}")
    path.write_bytes(data.tobytes())

"""Optional int8 encoder: onnxruntime static quantization of an exported encoder graph.

Calibrated on real frames (RGB uint8 arrays of any size, resized to the export's input size as
the pipeline resizes). Only the convolutions are quantized (per-channel int8 weights, uint8
activations, QDQ format); the folded first layers (a MatMul) and the outputs stay fp32, so
the query graphs read the int8 encoder's maps unchanged. Its agreement with fp32 was measured on
held-out KITTI frames (docs/performance/export.md), not assumed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from kdbts_ros.core.model.export import ENCODER, load_metadata

INT8_ENCODER = "encoder_int8.onnx"


def image_input(image: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The encoder graph's input (1, 3, H, W) float32 in [0, 1] of an RGB uint8 image already in the network's
    camera (``kdbts export`` resamples its calibration frames into it); resized if its size differs."""
    H, W = input_size
    resized = cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def quantize_encoder(
    export_dir: str | Path,
    calibration_images: Iterable[np.ndarray],
    out_name: str = INT8_ENCODER,
    method: str = "minmax",
) -> Path:
    """Write the int8 encoder ``out_name`` beside the export's fp32 encoder; returns its path.

    ``method``: onnxruntime's calibration, minmax or percentile.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    export_dir = Path(export_dir)
    meta = load_metadata(export_dir)
    size = (int(meta["input_size"]["height"]), int(meta["input_size"]["width"]))
    inputs = [{"image": image_input(im, size)} for im in calibration_images]
    if not inputs:
        raise ValueError("int8 calibration needs at least one frame")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    pre = export_dir / f".{out_name}.pre.onnx"
    out = export_dir / out_name
    try:
        quant_pre_process(str(export_dir / meta["files"][ENCODER]), str(pre))
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            calibrate_method=methods[method],
        )
    finally:
        pre.unlink(missing_ok=True)
    return out

"""kdbts soak, short: the live node fed at twice its sustained rate keeps latency bounded and memory flat.

Not a timed test: every assertion is structural (accounting, no backlog, no leak) or bounded by
what the run itself measured, so a slow or busy machine changes the figures but not the verdict.
"""

from __future__ import annotations

import json

import pytest

from kdbts_ros.commands.cli import main

pytest.importorskip("rclpy")
pytest.importorskip("kdbts_ros.msg")

pytestmark = pytest.mark.integration

FRAMES = 300
# the embedded network at a small input, a coarse grid: a few frames per tenth even on a busy machine
SMALL = """\
kdbts_node:
  ros__parameters:
    model: {image_height: 48, image_width: 160, device: cpu}
    grid: {resolution: 0.5}
    render: {samples: 32}
    map: {resolution: 0.5, extent_xy: 40.0}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("soak")
    (tmp / "small.yaml").write_text(SMALL)
    rc = main(
        [
            "soak",
            "--config",
            str(tmp / "small.yaml"),
            "--frames",
            str(FRAMES),
            "--load-factor",
            "2",
            "--cameras",
            "2",
            "--image-size",
            "320",
            "96",
            "--map",
            "--out",
            str(tmp / "out"),
        ]
    )
    assert rc == 0
    assert "| tenth 10 |" in (tmp / "out" / "soak.md").read_text()
    return json.loads((tmp / "out" / "soak.json").read_text())


def test_the_rate_is_twice_the_measured_one_and_was_kept(report):
    cal, late = report["calibration"], report["publish_late"]
    # the rate comes from the closed-loop calibration: twice the reciprocal of its median frame time
    assert cal["frames"] > 0 and 0 < cal["median_ms"] <= cal["p99_ms"]
    assert report["rate_hz"] == pytest.approx(2e3 / cal["median_ms"])
    # and the source kept to it: frame i went out at start + i / rate (a sleep never ends early) and at most the
    # worst measured lateness after it, so the run, measured from start to just after the last publish, lasted
    # (FRAMES - 1) / rate plus at most that lateness (and a moment to sample memory and print the progress line)
    assert 0 <= late["median_ms"] <= late["p90_ms"] <= late["p99_ms"] <= late["max_ms"]
    scheduled = (FRAMES - 1) / report["rate_hz"]
    assert scheduled - 1e-3 <= report["duration_s"] <= scheduled + late["max_ms"] / 1e3 + 0.25
    # the input was faster than the node could go
    assert report["processed_hz"] == pytest.approx(report["output_camera"]["processed"] / report["duration_s"])
    assert report["processed_hz"] < report["rate_hz"]
    assert "/right/image_raw/compressed" in report["input"]


def test_latency_and_memory_figures_agree_with_each_other(report):
    lat, cam, mem = report["latency"], report["output_camera"], report["memory"]
    tenths = lat["tenths"]
    assert len(tenths) == 10
    # every delivered frame falls in exactly one tenth, and a tenth without one reports no latency
    assert sum(t["frames_delivered"] for t in tenths) == cam["delivered"] <= cam["processed"]
    for t in tenths:
        if t["frames_delivered"]:
            assert 0 < t["median_ms"] <= t["p90_ms"] <= t["p99_ms"] <= t["max_ms"], t
        else:
            assert "median_ms" not in t and "max_ms" not in t, t
    assert 0 < lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["max_ms"] == max(t["max_ms"] for t in tenths if t["frames_delivered"])
    # memory: the summary is made of the per-tenth medians, the peak is at least each of them
    rss = [t["rss_median_mb"] for t in tenths]
    assert (mem["first_tenth_mb"], mem["second_tenth_mb"], mem["last_tenth_mb"]) == (rss[0], rss[1], rss[-1])
    assert mem["growth_mb"] == pytest.approx(mem["last_tenth_mb"] - mem["second_tenth_mb"])
    assert mem["peak_mb"] >= max(r for r in rss if r is not None)
    # the node-wide drop counts include the output camera's
    assert all(report["drops"].get(reason, 0) >= n for reason, n in cam["dropped"].items())
    assert cam["not_received"] == cam["sent"] - cam["received"] and cam["accounted"] is True


def test_every_image_the_node_received_is_accounted_for(report):
    cam = report["output_camera"]
    assert cam["sent"] == FRAMES and 0 < cam["received"] <= FRAMES
    # inside the node nothing is lost silently: processed, dropped for a counted reason, or (at most one) waiting.
    # Images it never received were overwritten in its subscription's DDS queue (keep-last 5) while its executor
    # was held up: the node cannot count those, the report shows them (how many depends on the machine's load).
    assert cam["received"] == cam["processed"] + sum(cam["dropped"].values()) + cam["waiting"]
    assert cam["waiting"] <= 1
    # the input was faster than the node: it kept the newest image and said so, yet kept processing (how much
    # is speed, and on a loaded 2-core machine rclpy's executor can take most of the CPU: see the soak results)
    assert cam["dropped"].get("superseded", 0) > 0
    assert cam["processed"] >= 6
    assert cam["delivered"] >= 0.9 * cam["processed"]


def _p90(tenths: list[dict], candidates: range) -> float:
    """p90 latency of the first tenth among ``candidates`` with a delivered frame (a busy machine can stall one)."""
    return next(tenths[k]["p90_ms"] for k in candidates if tenths[k]["frames_delivered"])


def test_latency_is_bounded_under_overload(report):
    tenths = report["latency"]["tenths"]
    early, late = _p90(tenths, range(1, 4)), _p90(tenths, range(9, 6, -1))
    # Keeping only the newest image, an image waits at most for the frame in hand: latency stays within a few
    # frame times whatever the run length. A queue would build a backlog at half the input rate (load factor
    # 2), so near the end it would wait for about 0.4 * FRAMES frames (over 100 here) and its p90 would be
    # several times that of the second tenth. So: at most 3 times the early p90, or 10 frame times at the rate
    # the node managed under this load (one slow tenth on a busy machine is not a backlog).
    frame_time_ms = 1e3 * report["duration_s"] / report["output_camera"]["processed"]
    assert late <= max(3 * early, 10 * frame_time_ms)


def test_memory_stays_flat(report):
    # about 100 samples are planned; a loaded machine publishes late and skips some, 20 still give each tenth a median
    mem = report["memory"]
    assert mem["samples"] >= 20 and mem["peak_mb"] >= mem["last_tenth_mb"] > 0
    # allocator and DDS pools settle in the first tenth and then vary by about 10 MB; keeping anything of every
    # frame sent (a rig frame is 2 x 92 kB of raw images, more once decoded) adds tens of MB over the run
    assert mem["growth_mb"] < 50
    # with the world map on (--map): every processed frame fused into the same fixed window
    world = report["world_map"]
    assert world["map_frames"] > 0 and world["map_memory_mb"] == "0.5"  # 80 x 80 x 16 voxels, 5 bytes each

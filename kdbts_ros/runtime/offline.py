"""The offline driver: recorded messages through a runner in time order, as the node would see them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from kdbts_ros.core.frames import Outputs
from kdbts_ros.runtime.runner import FrameRunner

DIAGNOSTICS_PERIOD_NS = 1_000_000_000  # the node publishes diagnostics at 1 Hz


class MessageSink(Protocol):
    """Where :func:`run_messages` writes (a :class:`kdbts_ros.data.bags.BagWriter`)."""

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None: ...


def run_messages(
    runner: FrameRunner,
    messages: Iterable[tuple[int, str, str, bytes]],
    sink: MessageSink,
    on_output: Callable[[Outputs], None] | None = None,
) -> Outputs | None:
    """Feed (stamp, topic, msgtype, bytes) in time order to the runner as the node does; write inputs and outputs.

    Each input goes to the callback the node subscribes for its topic, and the runner steps at
    each message's stamp (the node's clock under use_sim_time); outputs are written at that
    stamp, ``/diagnostics`` every second of message time and once at the end. A frame still
    waiting for its pose after the last message is stepped once more ``tf_timeout`` later, as
    the node's timer would. Returns the outputs of the last processed frame.
    """
    cfg = runner.cfg
    last: Outputs | None = None

    def step(now: int) -> None:
        nonlocal last
        before = runner.processed
        for out_topic, out_type, out_data in runner.step(now):
            sink.write(out_topic, out_type, now, out_data)
        if runner.processed > before:
            last = runner.last
            assert last is not None  # a frame was processed: the runner kept its outputs
            if on_output is not None:
                on_output(last)

    stamp, next_diag = None, None
    for stamp, topic, msgtype, data in messages:
        sink.write(topic, msgtype, stamp, data)
        runner.handle(topic, data, stamp)
        step(stamp)
        next_diag = stamp + DIAGNOSTICS_PERIOD_NS if next_diag is None else next_diag
        if stamp >= next_diag:
            sink.write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", stamp, runner.diagnostics(stamp))
            next_diag += DIAGNOSTICS_PERIOD_NS
    if stamp is None:
        raise ValueError("no messages to run")
    if runner.pending is not None:
        stamp = max(stamp, runner.pending.arrival_ns + int(cfg.tf_timeout * 1e9))
        step(stamp)
    sink.write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", stamp, runner.diagnostics(stamp))
    return last

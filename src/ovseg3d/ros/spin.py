"""Spinning an executor whose nodes destroy their own entities in callbacks (lifecycle transitions).

rclpy's executor builds its wait set in the spinning thread: it enters each waitable (the QoS-event
handlers rclpy gives every publisher and subscription), then adds it to the set, entering it once
more. A transition that destroys that publisher or subscription in a worker thread between the two
(``on_cleanup``, ``on_deactivate``) makes the second enter raise ``InvalidHandle`` ("cannot use
Destroyable because destruction was requested") out of ``spin``: the node's process died on
``ros2 lifecycle set <node> cleanup`` in about one run of two here. Nothing is lost by building the
wait set again without the destroyed entity, which is what the next turn does.
"""

from __future__ import annotations

from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor
from rclpy.task import Future


def spin(executor: Executor, until: Future | None = None) -> None:
    """``executor.spin()`` (or ``spin_until_future_complete(until)``), resumed after that race."""
    while True:
        try:
            if until is None:
                executor.spin()
            else:
                executor.spin_until_future_complete(until)
            return
        except InvalidHandle:
            continue

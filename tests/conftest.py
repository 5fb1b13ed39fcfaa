"""Shared fixtures."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread, restored afterwards: small models run faster so when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sigkill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll until ``ready()``, then SIGKILL ``proc``; fail with its stderr if it exits first, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "child exited"
            assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def kill_when() -> Callable[..., None]:
    """:func:`sigkill_when`, for the tests that kill a CLI run mid-way."""
    return sigkill_when

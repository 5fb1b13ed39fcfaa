"""The bundled weights restore at least as well as their model card says, on a held-out set made at test time.

``smartassign bundle`` records the bundled weights' figures on ``gate.CI_SET`` in ``weights/small.scores.json``;
this test rebuilds that set (held-out photographs, fixed seed), scores the bundled file again and fails when
the PSNR-Y gain or the recognition falls below the recorded figures by more than the stated margins. Weights
replaced without going through the gate fail here too: their checksum is not the recorded one.
"""

from __future__ import annotations

import json

import pytest

from smartassign import gate
from smartassign.config import TASKS


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(gate.SCORES.read_text())


def test_recorded_scores_belong_to_the_bundled_file(recorded):
    assert recorded["sha256"] == gate.sha256(gate.BUNDLED), "bundled weights changed without `smartassign bundle`"
    assert recorded["ci"]["set"] == gate.CI_SET.as_dict()


def test_bundled_weights_reach_their_recorded_gain_and_recognition(recorded, one_thread):
    now = gate.score_weights(gate.BUNDLED, gate.CI_SET)
    for task in TASKS:
        want, got = recorded["ci"][task], now[task]
        assert got["gain_psnr_y"] >= want["gain_psnr_y"] - gate.CI_MARGIN_DB, task
        assert got["accuracy"] >= want["accuracy"] - gate.CI_MARGIN_ACC, task

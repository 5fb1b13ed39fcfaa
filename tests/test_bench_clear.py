"""benchmarks/clear_eval.py: what weights do to a clear photograph, measured the way its table says."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from clear_eval import IDENTICAL_DB, difference  # noqa: E402


def test_difference_separates_a_global_darkening_from_detail():
    rng = np.random.default_rng(0)
    clear = rng.uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    same = difference(clear, clear)
    assert same == {"psnr_y": IDENTICAL_DB, "offset_y": 0.0, "low_rms": 0.0, "high_rms": 0.0}
    darker = difference(clear - 10 / 255, clear)  # ten RGB levels darker everywhere: 10 x 219/255 levels of Y
    y = 10 * 219 / 255  # MATLAB's rgb2ycbcr maps [0, 255] RGB to Y in [16, 235]
    assert darker["offset_y"] == pytest.approx(-y, abs=0.6) and darker["low_rms"] == pytest.approx(y, abs=0.6)
    assert darker["high_rms"] < 0.6 and darker["psnr_y"] == pytest.approx(20 * np.log10(255 / y), abs=0.6)
    noisy = difference(np.clip(clear + rng.normal(0, 10 / 255, clear.shape), 0, 1).astype(np.float32), clear)
    assert abs(noisy["offset_y"]) < 0.6 and noisy["high_rms"] > 3 * noisy["low_rms"]

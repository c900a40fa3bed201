"""dicom_io.reader frame choice: the cap on a cine, the representative frame first, only chosen frames decoded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.pixels.decoders.base import DecodeRunner

from dicom_io import build_us_dataset, iter_scans, read_header
from dicom_io.frames import FramePlan, FrameRule, frames_to_measure, plan_frames, sample_frames
from dicom_io.reader import open_scans
from dicom_io.writer import encode
from us_files import SPACING_MM, real_file

Writer = Callable[..., Path]


def _cine(count: int, shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 200, size=(count, *shape), dtype=np.uint8)
    for i in range(count):
        frames[i, 0, 0] = i  # a frame's own 0-based index, to check which one was decoded
    return frames


# -- sample_frames --------------------------------------------------------------------------------------------

def test_a_120_frame_cine_capped_at_16_keeps_16_evenly_spaced_frames_with_both_ends() -> None:
    assert sample_frames(120, 16) == [1, 9, 17, 25, 33, 41, 49, 57, 64, 72, 80, 88, 96, 104, 112, 120]
    assert sample_frames(120, 4) == [1, 41, 80, 120]
    assert sample_frames(9, 3) == [1, 5, 9]


@pytest.mark.parametrize("total, cap", [(1, 0), (1, 16), (16, 16), (15, 16), (120, 0), (2000, 0)])
def test_no_cap_or_a_cine_within_the_cap_keeps_every_frame(total: int, cap: int) -> None:
    assert sample_frames(total, cap) == list(range(1, total + 1))


def test_a_cap_of_one_keeps_the_last_frame() -> None:
    assert sample_frames(120, 1) == [120]


@pytest.mark.parametrize("total", [2, 3, 17, 100, 120, 121, 999, 2000])
def test_every_cap_gives_exactly_that_many_distinct_ascending_evenly_spaced_frames(total: int) -> None:
    for cap in range(2, total):
        frames = sample_frames(total, cap)
        assert len(frames) == cap
        assert frames[0] == 1 and frames[-1] == total
        assert frames == sorted(set(frames))
        gaps = np.diff(frames)
        assert gaps.max() - gaps.min() <= 1, (total, cap, frames)  # as even as whole frames allow
        assert sample_frames(total, cap) == frames  # deterministic


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        sample_frames(10, -1)


# -- plan_frames ----------------------------------------------------------------------------------------------

def test_the_representative_frame_wins_over_the_cap() -> None:
    ds = build_us_dataset(_cine(40), SPACING_MM, representative_frame=23)
    plan = plan_frames(ds, max_frames=4)
    assert (plan.frames, plan.total, plan.rule, plan.sampled) == ((23,), 40, FrameRule.REPRESENTATIVE, False)


def test_a_representative_frame_out_of_range_is_ignored_and_the_cine_sampled() -> None:
    ds = build_us_dataset(_cine(40), SPACING_MM)
    ds.RepresentativeFrameNumber = 41
    plan = plan_frames(ds, max_frames=4)
    assert (plan.frames, plan.rule, plan.sampled) == ((1, 14, 27, 40), FrameRule.SAMPLED, True)


def test_a_cine_over_the_cap_is_sampled_and_zero_means_every_frame() -> None:
    ds = build_us_dataset(_cine(40), SPACING_MM)
    assert plan_frames(ds, max_frames=8).rule is FrameRule.SAMPLED
    assert len(plan_frames(ds, max_frames=8).frames) == 8
    assert plan_frames(ds, max_frames=0) == FramePlan(tuple(range(1, 41)), 40, FrameRule.ALL)
    assert plan_frames(ds, max_frames=40).rule is FrameRule.ALL
    assert frames_to_measure(ds) == list(range(1, 41))  # the reader's default: no cap
    assert frames_to_measure(ds, 8) == sample_frames(40, 8)


def test_a_single_frame_image_and_frames_asked_for_are_never_sampled() -> None:
    single = build_us_dataset(_cine(1)[0], SPACING_MM)
    assert plan_frames(single, max_frames=1) == FramePlan((1,), 1, FrameRule.ALL)
    cine = build_us_dataset(_cine(40), SPACING_MM, representative_frame=2)
    assert plan_frames(cine, max_frames=4, asked=[30, 3, 30]) == FramePlan((3, 30), 40, FrameRule.ASKED)


def test_a_frame_plan_refuses_frames_outside_the_instance() -> None:
    with pytest.raises(ValueError):
        FramePlan((0, 2), 5, FrameRule.ASKED)
    with pytest.raises(ValueError):
        FramePlan((2, 1), 5, FrameRule.ASKED)
    with pytest.raises(ValueError):
        FramePlan((), 5, FrameRule.ALL)


# -- reading a sampled cine -----------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["explicit_le", "rle"])
def test_a_sampled_cine_yields_the_sampled_frames_with_their_own_pixels(encoding: str, write: Writer) -> None:
    frames = _cine(30)
    path = write(encode(build_us_dataset(frames, SPACING_MM), encoding))

    plan, scans = open_scans(path, max_frames=5)
    got = list(scans)

    assert plan.frames == (1, 8, 16, 23, 30) and plan.sampled
    assert [(s.frame, s.frames_in_instance) for s in got] == [(n, 30) for n in plan.frames]
    assert all(np.array_equal(s.pixels, frames[s.frame - 1]) for s in got)
    assert [s.frame for s in iter_scans(path)] == list(range(1, 31))  # iter_scans' default: every frame


def test_only_the_sampled_frames_are_decoded(write: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(encode(build_us_dataset(_cine(40), SPACING_MM), "rle"))
    decoded: list[int | None] = []
    original = DecodeRunner.decode

    def counting(self: DecodeRunner, index: int | None = None) -> bytes | bytearray:
        decoded.append(index)
        return original(self, index=index)

    monkeypatch.setattr(DecodeRunner, "decode", counting)
    _, scans = open_scans(path, max_frames=4)
    assert [s.frame for s in scans] == [1, 14, 27, 40]
    assert decoded == [0, 13, 26, 39]  # 4 frames decoded, not 40


def test_sonosite_120_frame_cine_is_sampled_to_the_cap() -> None:
    path = real_file("color3d_jpeg_baseline.dcm")
    assert read_header(path).dataset.get("RepresentativeFrameNumber") is None

    plan, scans = open_scans(path, max_frames=16)
    got = list(scans)

    assert plan.total == 120 and plan.rule is FrameRule.SAMPLED
    assert [s.frame for s in got] == sample_frames(120, 16)
    assert all(s.pixels.shape == (384, 512) for s in got)

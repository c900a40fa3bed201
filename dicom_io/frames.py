"""Which frames of an instance to measure: the caller's, the representative frame, or a sample of a cine.

Also the few header numbers that decision needs (frame count), shared with the reader.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import StrEnum

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

# Parse failures pydicom (and the decoders under it) raise on malformed input.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError,
    struct.error, NotImplementedError, RuntimeError, ZeroDivisionError, MemoryError, RecursionError,
    BytesLengthException, InvalidDicomError,
)


def number_attribute(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute (IS/US/DS...) of ``ds``; ``default`` when absent or empty; ValueError when not finite."""
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{keyword} is {value!r}")
    return int(number)


def frame_count(ds: Dataset) -> int:
    """(0028,0008) Number of Frames, 1 when absent."""
    return number_attribute(ds, "NumberOfFrames", 1) or 1


def representative_frame(ds: Dataset) -> int | None:
    """(0028,6010) Representative Frame Number (1-based), when present and valid."""
    try:
        value = ds.get("RepresentativeFrameNumber")
        number = int(value) if value is not None and value != "" else None
        total = frame_count(ds)
    except PARSE_ERRORS:
        return None
    return number if number is not None and 1 <= number <= total else None


class FrameRule(StrEnum):
    """Why these frames of an instance are the ones measured."""

    ASKED = "asked"  # the caller named them
    REPRESENTATIVE = "representative"  # (0028,6010) Representative Frame Number
    ALL = "all"  # every frame (a single-frame image, or a cine within the cap)
    SAMPLED = "sampled"  # a cine over the cap: evenly spaced frames, first and last included


@dataclass(frozen=True)
class FramePlan:
    """The 1-based ``frames`` (ascending, unique) of an instance of ``total`` frames to measure, and why."""

    frames: tuple[int, ...]
    total: int
    rule: FrameRule

    def __post_init__(self) -> None:
        if not self.frames or list(self.frames) != sorted(set(self.frames)):
            raise ValueError(f"frames must be ascending, unique and not empty: {self.frames}")
        if self.frames[0] < 1 or self.frames[-1] > self.total:
            raise ValueError(f"frames {self.frames} are not all within 1..{self.total}")

    @property
    def sampled(self) -> bool:
        """True when frames were skipped by the cap (not by a representative frame or a caller's choice)."""
        return self.rule is FrameRule.SAMPLED


def sample_frames(total: int, max_frames: int) -> list[int]:
    """``max_frames`` evenly spaced 1-based frames of ``total``, the first and the last included.

    Every frame when ``max_frames`` is 0 or not below ``total``. The last frame is always kept: in a
    retrospective cine (stored on freeze) it is the frame the operator froze on. With ``max_frames``
    of 1 it is the only one. Integer arithmetic, so the choice is the same on every machine.

    Example: ``sample_frames(120, 4) == [1, 41, 80, 120]``.
    """
    if total < 1 or max_frames < 0:
        raise ValueError(f"cannot sample {max_frames} of {total} frames")
    if max_frames == 0 or max_frames >= total:
        return list(range(1, total + 1))
    if max_frames == 1:
        return [total]
    steps, span = max_frames - 1, total - 1
    # Round i * span / steps to the nearest integer; span > steps, so the frames are distinct.
    return [1 + (2 * i * span + steps) // (2 * steps) for i in range(max_frames)]


def plan_frames(ds: Dataset, max_frames: int = 0, asked: list[int] | None = None) -> FramePlan:
    """Which frames of ``ds`` to measure: ``asked`` (1-based) when given; else (0028,6010)
    Representative Frame Number when present; else every frame, or ``sample_frames`` of them when the
    image has more than ``max_frames`` (0: no cap).
    """
    total = frame_count(ds)
    if asked:
        return FramePlan(tuple(sorted(set(asked))), total, FrameRule.ASKED)
    chosen = representative_frame(ds)
    if chosen:
        return FramePlan((chosen,), total, FrameRule.REPRESENTATIVE)
    frames = sample_frames(total, max_frames)
    return FramePlan(tuple(frames), total, FrameRule.SAMPLED if len(frames) < total else FrameRule.ALL)


def frames_to_measure(ds: Dataset, max_frames: int = 0) -> list[int]:
    """1-based frames to measure: the representative frame when named, else all (or a capped sample)."""
    return list(plan_frames(ds, max_frames).frames)

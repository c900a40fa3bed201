"""`fetalhc process` bounds torch's and OpenCV's threads as a worker process does (FETALHC_TORCH_THREADS)."""

from __future__ import annotations

import cv2
import torch

from worker.cli.process import bound_threads
from worker.core.cpus import available_cpus


def test_the_setting_wins_and_the_default_is_this_process_share() -> None:
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        assert bound_threads(1) == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert bound_threads(0) == available_cpus() == torch.get_num_threads()
        assert bound_threads(0, processes=available_cpus() * 4) == 1  # never 0 threads
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])

"""Visibility values that name one GPU twice, or that look like digits without being ASCII indices: never two
workers on one GPU, never a crash of the service at start (the slot logic runs before anything else)."""

import pytest

from kpt.gpu import slots
from kpt.gpu.slots import Found


@pytest.mark.parametrize("value, expected", [
    ("1,01", ["1"]),  # CUDA reads indices as numbers: 01 is GPU 1 again, a repeat
    ("0,2,002,3", ["0", "2"]),
    ("²", []),  # str.isdigit() but not an index (int() refuses it)
    ("0,1,٣", ["0", "1"]),  # an Arabic-Indic digit is no index to CUDA either
])
def test_parse_visible_compares_indices_as_numbers_and_takes_ascii_only(value, expected):
    assert slots.parse_visible(value) == expected


def test_nvidia_never_gives_two_workers_one_gpu():
    assert slots.nvidia_slots({"CUDA_VISIBLE_DEVICES": "1,01"}, Found(4)) == [{"CUDA_VISIBLE_DEVICES": "1"}]


@pytest.mark.parametrize("value, expected", [("²", ""), ("0,²", "0")])
def test_nvidia_odd_digits_do_not_crash_the_service(value, expected):
    assert slots.nvidia_slots({"CUDA_VISIBLE_DEVICES": value}, Found(4)) == [{"CUDA_VISIBLE_DEVICES": expected}]


def test_amd_never_gives_two_workers_one_gpu_and_odd_digits_do_not_crash():
    assert slots.amd_slots({"ROCR_VISIBLE_DEVICES": "3,03"}, Found(8)) == [
        {"ROCR_VISIBLE_DEVICES": "3", "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "0"}]
    assert slots.amd_slots({"HIP_VISIBLE_DEVICES": "1,²"}, Found(4)) == [
        {"ROCR_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "0"}]

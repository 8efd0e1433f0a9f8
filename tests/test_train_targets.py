import numpy as np
import pytest
import torch

from clip_ebc.bins import counts_to_labels, make_bins, official_anchor_points
from clip_ebc.train.targets import average_anchor_points, block_counts, dataset_anchor_points, window_count_histogram


def test_block_counts_dedupe_pixels_and_clamp():
    points = torch.tensor([[1.2, 1.7], [1.9, 1.1], [9.0, 2.0], [15.0, 15.0], [40.0, -3.0]])
    counts = block_counts(points, 16, 16, 8)
    # (1.2, 1.7) and (1.9, 1.1) share pixel (1, 1): counted once, as upstream; (40, -3) is clamped to (15, 0)
    assert counts.tolist() == [[1.0, 2.0], [0.0, 1.0]]
    assert block_counts(torch.zeros(0, 2), 16, 24, 8).shape == (2, 3)
    with pytest.raises(ValueError, match="not a whole number of 8-pixel blocks"):
        block_counts(points, 20, 16, 8)


def test_labels_of_block_counts():
    counts = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 12.0]])
    assert counts_to_labels(counts, make_bins(4)).tolist() == [[0, 1, 2, 3, 4, 4]]
    assert counts_to_labels(counts, make_bins(8, "coarse")).tolist() == [[0, 1, 1, 2, 2, 4]]


def test_window_histogram_against_brute_force():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, [30, 20], size=(40, 2))
    hist = window_count_histogram(points, 20, 30, 8)
    marks = np.zeros((20, 30), int)
    marks[np.floor(points[:, 1]).astype(int), np.floor(points[:, 0]).astype(int)] = 1
    brute = [marks[y : y + 8, x : x + 8].sum() for y in range(20 - 8 + 1) for x in range(30 - 8 + 1)]
    assert hist.tolist() == np.bincount(brute).tolist()
    assert hist.sum() == (20 - 8 + 1) * (30 - 8 + 1)


def test_average_anchor_points():
    hist = np.array([10, 4, 3, 2, 5, 1, 0, 0, 0, 2])  # windows per count 0..9
    # open bin [4, inf): (4*5 + 5*1 + 9*2) / 8
    assert average_anchor_points(hist, make_bins(4)) == [0, 1, 2, 3, pytest.approx(43 / 8)]
    coarse = average_anchor_points(hist, make_bins(8, "coarse"))
    assert coarse[1] == pytest.approx((1 * 4 + 2 * 3) / 7) and coarse[-1] == pytest.approx(9.0)
    assert average_anchor_points(np.array([5]), make_bins(4))[2:] == [2, 3, 4]  # empty bins: middle anchors


def test_dataset_anchor_points_pool_all_images():
    points_a = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0], [5.0, 5.0]])
    anchors = dataset_anchor_points([(points_a, (8, 8)), (np.zeros((0, 2)), (16, 16))], make_bins(4), 8)
    # image a: one 8x8 window holding 5 people; image b: 81 empty windows
    assert anchors == [0, 1, 2, 3, 5.0]
    assert official_anchor_points(8, 4, "sha")[-1] == 4.29992

import math

import numpy as np
import pytest

from clip_ebc.bins import (
    bin_prompt,
    bin_prompts,
    counts_to_labels,
    make_bins,
    middle_anchor_points,
    number_to_words,
    official_anchor_points,
    official_bins,
    official_configurations,
    validate_bins,
)
from clip_ebc.errors import ConfigError

INF = math.inf


@pytest.mark.parametrize(
    "n, word",
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (21, "twenty-one"), (45, "forty-five"),
     (99, "ninety-nine"), (100, "one hundred"), (900, "nine hundred"), (1000, "one thousand"),
     (101, "101"), (250, "250"), (1100, "1100")],
)
def test_number_to_words(n, word):
    assert number_to_words(n) == word


@pytest.mark.parametrize(
    "b, word, number",
    [
        ((0, 0), "There is no person.", "There is 0 person."),
        ((1, 1), "There is one person.", "There is 1 person."),
        ((2, 2), "There are two people.", "There are 2 people."),
        ((21, 21), "There are twenty-one people.", "There are 21 people."),
        ((4, INF), "There are more than four people.", "There are more than 4 people."),
        ((11, INF), "There are more than eleven people.", "There are more than 11 people."),
        # the official code crashes on ranges; this is the fixed form
        ((4, 5), "There are between four and five people.", "There are between 4 and 5 people."),
        ((10, 11), "There are between ten and eleven people.", "There are between 10 and 11 people."),
    ],
)
def test_prompts_match_official_table(b, word, number):
    assert bin_prompt(b, "word") == word
    assert bin_prompt(b, "number") == number


def test_prompt_sets_per_configuration():
    assert bin_prompts(official_bins(8, 2)) == [
        "There is no person.", "There is one person.", "There are more than two people."]
    assert bin_prompts(official_bins(8, 4)) == [
        "There is no person.", "There is one person.", "There are two people.", "There are three people.",
        "There are more than four people."]
    p11 = bin_prompts(official_bins(8, 11))
    assert len(p11) == 12 and p11[-2:] == ["There are ten people.", "There are more than eleven people."]
    p16 = bin_prompts(official_bins(16, 8))
    assert len(p16) == 9 and p16[-1] == "There are more than eight people."
    p32 = bin_prompts(official_bins(32, 19))
    assert len(p32) == 20 and p32[-1] == "There are more than nineteen people."


def test_every_granularity_builds_prompts():
    dyn = bin_prompts(official_bins(16, 8, "dynamic"))
    assert dyn[4:] == ["There are between four and five people.", "There are between six and seven people.",
                       "There are more than eight people."]
    coarse = bin_prompts(official_bins(32, 19, "coarse"), "number")
    assert coarse[:2] == ["There is 0 person.", "There are between 1 and 2 people."]
    assert coarse[-1] == "There are more than 19 people." and len(coarse) == 11


# The bins of configs/reduction_{16,32}.json, written out as the official file has them.
OFFICIAL_BINS = {
    (16, 8, "fine"): [(i, i) for i in range(8)] + [(8, INF)],
    (16, 8, "dynamic"): [(0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 7), (8, INF)],
    (16, 8, "coarse"): [(0, 0), (1, 2), (3, 4), (5, 6), (7, INF)],
    (32, 19, "fine"): [(i, i) for i in range(19)] + [(19, INF)],
    (32, 19, "dynamic"): [(i, i) for i in range(10)] + [(10, 11), (12, 13), (14, 15), (16, 17), (18, INF)],
    (32, 19, "coarse"): [(0, 0)] + [(i, i + 1) for i in range(1, 19, 2)] + [(19, INF)],
    (8, 2, "fine"): [(0, 0), (1, 1), (2, INF)],
    (8, 4, "fine"): [(0, 0), (1, 1), (2, 2), (3, 3), (4, INF)],
    (8, 11, "fine"): [(i, i) for i in range(11)] + [(11, INF)],
}


@pytest.mark.parametrize("key", sorted(OFFICIAL_BINS, key=str))
def test_bins_reproduce_official_configs(key):
    r, t, g = key
    assert official_bins(r, t, g) == [(float(a), float(b)) for a, b in OFFICIAL_BINS[key]]
    assert make_bins(t, g) == official_bins(r, t, g)


def test_official_anchor_points():
    avg8 = {"sha": 4.29992, "shb": 4.41009, "nwpu": 4.21931, "qnrf": 4.21937, "jhu": 4.24058}
    for ds, last in avg8.items():
        assert official_anchor_points(8, 4, ds) == [0, 1, 2, 3, last]
    assert official_anchor_points(8, 2, "nwpu") == [0, 1, 2.10737]
    assert official_anchor_points(8, 11, "qnrf") == list(range(12))
    assert official_anchor_points(8, 4, "sha", kind="middle") == [0, 1, 2, 3, 4]
    # the official code's dataset aliases, in any case
    assert official_anchor_points(8, 4, "ShanghaiTech_A") == official_anchor_points(8, 4, "sha")
    assert official_anchor_points(8, 2, "UCF-QNRF") == [0, 1, 2.09296]
    assert official_anchor_points(16, 8, "qnrf", "dynamic") == [0, 1, 2, 3, 4.29278, 6.31441, 9.23349]
    assert official_anchor_points(16, 8, "qnrf", "dynamic", "middle") == [0, 1, 2, 3, 4.5, 6.5, 8]
    assert official_anchor_points(16, 8, "qnrf", "coarse") == [0, 1.14978, 3.27641, 5.30609, 8.11466]
    assert official_anchor_points(16, 8, "qnrf", "coarse", "middle") == [0, 1.5, 3.5, 5.5, 7]
    assert official_anchor_points(32, 19, "qnrf")[-2:] == [18, 23.01897]
    assert official_anchor_points(32, 19, "qnrf", "dynamic")[9:] == [9, 10.42903, 12.43320, 14.43341, 16.43521, 21.93548]
    coarse = official_anchor_points(32, 19, "qnrf", "coarse")
    assert coarse[:3] == [0, 1.23498, 3.36108] and coarse[-1] == 23.01897 and len(coarse) == 11
    assert official_anchor_points(32, 19, "qnrf", "coarse", "middle") == [0] + [i + 0.5 for i in range(1, 19, 2)] + [19]
    for r, t, g, d in official_configurations():
        assert len(official_anchor_points(r, t, d, g)) == len(official_bins(r, t, g))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: official_bins(8, 6), "no bins for reduction 8 with truncation 6"),
        (lambda: official_bins(8, 4, "coarse"), r"only \['fine'\] granularity"),
        (lambda: official_anchor_points(16, 8, "sha"), "no anchor points for dataset 'sha'"),
        (lambda: official_anchor_points(8, 4, "sha", kind="mean"), "anchor kind must be"),
        (lambda: official_anchor_points(8, 4, "shanghaitech"), "unknown dataset 'shanghaitech'; the public datasets are sha, shb"),
        (lambda: make_bins(4, "medium"), "granularity must be one of"),
        (lambda: make_bins(0), "truncation must be a positive integer"),
    ],
)
def test_official_lookup_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_middle_anchor_points():
    assert middle_anchor_points(make_bins(8, "coarse")) == [0, 1.5, 3.5, 5.5, 7]


def test_counts_to_labels():
    counts = np.array([[0, 1, 2], [3, 4, 57]])
    assert counts_to_labels(counts, make_bins(4)).tolist() == [[0, 1, 2], [3, 4, 4]]
    assert counts_to_labels(np.arange(10), make_bins(8, "coarse")).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]


def test_counts_to_labels_on_tensors():
    import torch

    counts = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 57.0]])
    labels = counts_to_labels(counts, make_bins(4))
    assert labels.dtype == torch.int64 and labels.tolist() == [[0, 1, 2], [3, 4, 4]]


@pytest.mark.parametrize(
    "bins, message",
    [
        ([(0, 0), (2, INF)], "contiguous"),
        ([(1, 1), (2, INF)], "first bin must start at 0"),
        ([(0, 0), (1, 1)], "open-ended"),
        ([(0, 0)], "at least two bins"),
        ([(0, 0.5), (1, INF)], "integer range"),
    ],
)
def test_validate_bins_errors(bins, message):
    with pytest.raises(ConfigError, match=message):
        validate_bins(bins)

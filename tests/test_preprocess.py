import pytest
import torch

from clip_ebc.preprocess import to_input_tensor
from clip_ebc.resize import ResizeRule, snapped_size
from clip_ebc.tiling import tile_plan, whole_plan, window_plan


@pytest.mark.parametrize(
    "size, limits, expected",
    [
        ((1024, 768), (448, 4096), (1024, 768)),       # in range and already multiples of 32
        ((1000, 750), (448, 4096), (992, 736)),        # in range: still snapped (round half to even)
        ((400, 300), (448, 4096), (608, 448)),         # too small: shorter side to 448
        ((4000, 3000), (448, 3072), (3072, 2304)),     # NWPU: longer side to 3072
        ((6000, 4000), (448, 2048), (2048, 1376)),     # QNRF: 2048 x 1365.3 -> 1376
        ((1023, 1023), (448, 4096), (1024, 1024)),
        ((3000, 200), (448, 2048), (6720, 448)),       # aspect ratio cannot fit: max is lifted
    ],
)
def test_official_resize_rule(size, limits, expected):
    if size == (3000, 200):
        with pytest.warns(UserWarning, match="cannot keep its aspect ratio"):
            assert snapped_size(*size, *limits) == expected
    else:
        assert snapped_size(*size, *limits) == expected


def test_dataset_rules():
    assert ResizeRule.for_dataset("sha") == ResizeRule(448, 4096)
    assert ResizeRule.for_dataset("nwpu").size(4000, 3000) == (3072, 2304)
    assert ResizeRule.for_dataset("qnrf").max_side == 2048
    assert ResizeRule.for_dataset(None) == ResizeRule(448, None)


def test_input_tensor_normalisation_and_resize():
    rgb = torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8).numpy()
    x = to_input_tensor(rgb, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (1, 3, 50, 70) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 3, 4], (torch.from_numpy(rgb[3, 4]).float() / 255 - 0.5) / 0.25)
    y = to_input_tensor(rgb, (0, 0, 0), (1, 1, 1), size=(140, 100))
    assert y.shape == (1, 3, 100, 140)
    assert torch.equal(y * 255, (y * 255).round())  # resized values are whole 0-255 levels, like a saved JPEG


def covered(plan, cells):
    cover = torch.zeros(cells)
    for crop in plan:
        cover[crop.place[0], crop.place[1]] += 1
    return cover


def test_plans_cover_every_cell():
    assert covered(whole_plan(64, 96, (8, 12)), (8, 12)).eq(1).all()
    tiles = tile_plan(320, 512, tile=128, margin=64, block=8)
    assert covered(tiles, (40, 64)).eq(1).all()  # every cell from exactly one tile
    assert max(c.height for c in tiles) <= 128 + 2 * 64 and max(c.width for c in tiles) <= 256
    for c in tiles:  # kept cells are the core, placed where the core lies
        assert c.keep[0].stop - c.keep[0].start == c.place[0].stop - c.place[0].start
        assert c.top * 1 <= c.place[0].start * 8 and c.top % 32 == 0
    windows = window_plan(240, 320, (224, 224), (224, 224), 8)
    assert [(c.top, c.left) for c in windows] == [(0, 0), (0, 96), (16, 0), (16, 96)]
    cover = covered(windows, (30, 40))
    assert cover.min() == 1 and cover.max() == 4

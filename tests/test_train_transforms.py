import numpy as np
import pytest
import torch

from clip_ebc.train.transforms import Augmentation, TrainTransform


def dots(height, width, points):
    image = torch.zeros(3, height, width)
    for x, y in points:
        image[:, int(y), int(x)] = 1.0
    return image


def geometric_only(size, **kw):
    return TrainTransform(Augmentation(input_size=size, jitter_prob=0, blur_prob=0, noise_prob=0, **kw))


def test_same_seed_same_augmentation():
    image = torch.rand(3, 300, 400)
    points = torch.tensor([[10.0, 20.0], [200.0, 150.0]])
    t = TrainTransform(Augmentation(input_size=128))
    a = t(image, points, torch.Generator().manual_seed(3))
    b = t(image, points, torch.Generator().manual_seed(3))
    c = t(image, points, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 128, 128)


@pytest.mark.parametrize("size, shape", [(64, (300, 400)), (64, (50, 70))])  # plain crop; and the zoom-out path
def test_points_follow_the_pixels(size, shape):
    """Every kept point sits on a bright spot of the output, and every bright spot has a point."""
    rng = np.random.default_rng(0)
    height, width = shape
    pts = torch.tensor(rng.uniform(4, [width - 4, height - 4], size=(12, 2)).round(), dtype=torch.float32) + 0.5
    image = dots(height, width, pts)
    flips = 0
    for seed in range(12):
        out, moved = geometric_only(size)(image, pts, torch.Generator().manual_seed(seed))
        unflipped, _ = geometric_only(size, flip_prob=0.0)(image, pts, torch.Generator().manual_seed(seed))
        flips += not torch.equal(out, unflipped)
        assert out.shape == (3, size, size)
        assert ((moved >= 0) & (moved <= size - 1)).all()
        for x, y in moved.tolist():
            x0, y0 = int(round(x)), int(round(y))
            assert out[0, max(0, y0 - 2) : y0 + 3, max(0, x0 - 2) : x0 + 3].max() > 0.05, (seed, x, y)
        # no bright spot without an annotation nearby (a wrongly dropped point would fail here); spots in the
        # 3-pixel border band may belong to points just outside the crop, which are rightly dropped
        peaks = [(y, x) for y, x in (out[0] > 0.3).nonzero().tolist() if 3 <= y < size - 3 and 3 <= x < size - 3]
        for y, x in peaks:
            assert len(moved) and ((moved - torch.tensor([x, y])).abs().max(dim=1).values <= 3).any(), (seed, x, y)
    assert 0 < flips < 12


def test_flip_maps_x_to_the_mirror_column():
    image = dots(64, 64, [(5, 10)])
    t = TrainTransform(Augmentation(input_size=64, min_scale=1.0, max_scale=1.0, flip_prob=1.0, jitter_prob=0,
                                    blur_prob=0, noise_prob=0))
    out, pts = t(image, torch.tensor([[5.0, 10.0]]), torch.Generator().manual_seed(0))
    assert pts.tolist() == [[58.0, 10.0]] and out[0, 10, 58] == 1.0


def test_official_blur_is_vertical_and_isotropic_is_not():
    image = dots(64, 64, [(32, 32)])
    spread = {}
    for mode in ("official", "isotropic"):
        t = TrainTransform(Augmentation(input_size=64, min_scale=1.0, max_scale=1.0, flip_prob=0, jitter_prob=0,
                                        blur_prob=1.0, noise_prob=0, blur=mode))
        out, _ = t(image, torch.tensor([[32.0, 32.0]]), torch.Generator().manual_seed(5))
        channel = out[0]
        spread[mode] = (channel[:, 32].sum().item(), channel[32, :].sum().item())  # vertical, horizontal mass
    vertical, horizontal = spread["official"]
    assert vertical > 3 * horizontal  # sigma (0.1, 5.0) read as (x, y)
    iso_v, iso_h = spread["isotropic"]
    assert iso_v == pytest.approx(iso_h, rel=1e-3)


def test_salt_and_pepper_rates():
    t = TrainTransform(Augmentation(input_size=256, flip_prob=0, jitter_prob=0, blur_prob=0, noise_prob=1.0,
                                    saltiness=0.05, spiciness=0.05))
    out, _ = t(torch.full((3, 256, 256), 0.5), torch.zeros(0, 2), torch.Generator().manual_seed(0))
    assert (out == 1).float().mean().item() == pytest.approx(0.05, abs=0.005)
    assert (out == 0).float().mean().item() == pytest.approx(0.05, abs=0.005)


def test_bad_settings():
    with pytest.raises(ValueError, match="blur must be one of"):
        Augmentation(blur="gaussian")
    with pytest.raises(ValueError, match="0 < min_scale <= max_scale"):
        Augmentation(min_scale=2, max_scale=1)

import pytest
import torch

from clip_ebc import sliding_window_density
from clip_ebc.sliding_window import window_starts


@pytest.mark.parametrize(
    "size, window, stride, starts",
    [(240, 224, 224, [0, 16]), (448, 224, 224, [0, 224]), (224, 224, 224, [0]), (450, 224, 100, [0, 100, 200, 226]),
     (768, 224, 224, [0, 224, 448, 544]), (1024, 224, 224, [0, 224, 448, 672, 800])],
)
def test_window_starts(size, window, stride, starts):
    assert window_starts(size, window, stride) == starts


def reference_sliding_window(model, image, window, stride):
    """The official algorithm (spec §6.2), written out literally for one image: all windows in one batch."""
    r = model.config.reduction
    _, _, height, width = image.shape
    rows = -(-(height - window) // stride) + 1
    cols = -(-(width - window) // stride) + 1
    boxes, crops = [], []
    for i in range(rows):
        for j in range(cols):
            top, left = i * stride, j * stride
            if top + window > height:
                top = height - window
            if left + window > width:
                left = width - window
            boxes.append((top, left))
            crops.append(image[:, :, top : top + window, left : left + window])
    with torch.no_grad():
        preds = model(torch.cat(crops)).density
    total = torch.zeros(1, 1, height // r, width // r)
    count = torch.zeros(1, 1, height // r, width // r)
    for (top, left), pred in zip(boxes, preds):
        total[0, :, top // r : (top + window) // r, left // r : (left + window) // r] += pred
        count[0, :, top // r : (top + window) // r, left // r : (left + window) // r] += 1
    return total / count


@pytest.mark.parametrize("size, stride", [((240, 320), 224), ((250, 470), 112), ((224, 224), 224), ((300, 300), 76)])
def test_matches_the_official_algorithm(converted_vit, size, stride):
    torch.manual_seed(0)
    x = torch.randn(1, 3, *size)
    expected = reference_sliding_window(converted_vit, x, 224, stride)
    for batch_size in (1, 3, 64):
        got = sliding_window_density(converted_vit, x, 224, stride, batch_size=batch_size)
        assert got.shape == expected.shape == (1, 1, size[0] // 8, size[1] // 8)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_batch_of_images_equals_images_one_by_one(converted_vit):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 240, 320)
    together = sliding_window_density(converted_vit, x, batch_size=4)  # window = stride = input_size 224
    for i in range(3):
        alone = sliding_window_density(converted_vit, x[i : i + 1], batch_size=4)
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-5)


def test_resnet_windows(converted_rn50):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 160, 192)
    got = sliding_window_density(converted_rn50, x, 64, 32, batch_size=5)
    torch.testing.assert_close(got, reference_sliding_window(converted_rn50, x, 64, 32), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=224, stride=300), "must not exceed the window"),
        (dict(window=228, stride=228), "multiple of the block size 8"),
        (dict(window=224, stride=224, batch_size=0), "batch_size must be at least 1"),
    ],
)
def test_argument_errors(converted_vit, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_density(converted_vit, torch.zeros(1, 3, 240, 320), **kwargs)


def test_image_smaller_than_window(converted_vit):
    with pytest.raises(ValueError, match=r"image \(200x320\) is smaller than the window \(224x224\)"):
        sliding_window_density(converted_vit, torch.zeros(1, 3, 200, 320))

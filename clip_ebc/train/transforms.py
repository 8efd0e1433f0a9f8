"""Training augmentation with points kept consistent (spec §5.1).

In order: an aspect-keeping random resized crop that zooms out 1-2x, a horizontal flip (p = 0.5), then
independently colour jitter (p = 0.2), blur (p = 0.2) and salt-and-pepper noise (p = 0.5). Every random
number comes from the ``torch.Generator`` passed in, so a sample's augmentation is fixed by its seed (the
dataset derives one per epoch and index): runs are reproducible and resumable whatever the number of
data-loading workers.
"""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from torch import Tensor


from .settings import BLUR_MODES, Augmentation  # noqa: F401 - Augmentation is this module's input


def _uniform(low: float, high: float, g: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _randint(high: int, g: torch.Generator) -> int:
    """An integer in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=g))


def resize_with_points(image: Tensor, points: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Bicubic resize (with antialiasing) of a (3, H, W) image; points are scaled per axis and clamped
    to [0, size - 1], as upstream."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image, points
    image = TF.resize(image, [height, width], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    if len(points):
        points = points.clone()
        points[:, 0] = (points[:, 0] * width / w).clamp(0, width - 1)
        points[:, 1] = (points[:, 1] * height / h).clamp(0, height - 1)
    return image, points


def crop_with_points(image: Tensor, points: Tensor, top: int, left: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Crop a (3, H, W) image; points are shifted and those outside the crop dropped."""
    image = image[:, top : top + height, left : left + width]
    if len(points):
        points = points - points.new_tensor([left, top])
        inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
        points = points[inside]
    return image, points


class TrainTransform:
    """Callable ``(image, points, generator) -> (image, points)`` on (3, H, W) images in [0, 1] and (N, 2)
    (x, y) points in pixels; the result is a square ``input_size`` crop."""

    def __init__(self, settings: Augmentation) -> None:
        self.s = settings

    def __call__(self, image: Tensor, points: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        s = self.s
        image, points = self.random_resized_crop(image, points, g)
        if float(torch.rand((), generator=g)) < s.flip_prob:
            image = image.flip(-1)
            if len(points):
                points = points.clone()
                points[:, 0] = (image.shape[-1] - 1 - points[:, 0]).clamp(0, image.shape[-1] - 1)
        if float(torch.rand((), generator=g)) < s.jitter_prob:
            image = self.color_jitter(image, g)
        if float(torch.rand((), generator=g)) < s.blur_prob:
            if s.blur == "official":
                sigma = [0.1, 5.0]
            else:
                value = _uniform(0.1, 5.0, g)
                sigma = [value, value]
            image = TF.gaussian_blur(image, [s.blur_kernel, s.blur_kernel], sigma)
        if float(torch.rand((), generator=g)) < s.noise_prob:
            noise = torch.rand(image.shape, generator=g)  # per element and channel, as upstream
            image = torch.where(noise < s.saltiness, torch.ones_like(image), image)
            image = torch.where(noise > 1 - s.spiciness, torch.zeros_like(image), image)
        return image, points

    def random_resized_crop(self, image: Tensor, points: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """A square crop of ``input_size * scale`` pixels (upscaling the image first if it is smaller),
        resized to ``input_size``: a 1-2x zoom-out that keeps the aspect ratio."""
        size = self.s.input_size
        crop = int(size * _uniform(self.s.min_scale, self.s.max_scale, g))
        height, width = image.shape[-2:]
        if crop > height or crop > width:
            ratio = max(crop / height, crop / width)
            height, width = int(height * ratio) + 1, int(width * ratio) + 1
            image, points = resize_with_points(image, points, height, width)
        top, left = _randint(height - crop + 1, g), _randint(width - crop + 1, g)
        image, points = crop_with_points(image, points, top, left, crop, crop)
        return resize_with_points(image, points, size, size)

    def color_jitter(self, image: Tensor, g: torch.Generator) -> Tensor:
        """Brightness, contrast, saturation (and hue) in a random order, as torchvision's ColorJitter."""
        s = self.s
        adjust = [
            (s.brightness, lambda img, f: TF.adjust_brightness(img, f)),
            (s.contrast, lambda img, f: TF.adjust_contrast(img, f)),
            (s.saturation, lambda img, f: TF.adjust_saturation(img, f)),
        ]
        for index in torch.randperm(4, generator=g).tolist():
            if index < 3:
                amount, fn = adjust[index]
                if amount > 0:
                    image = fn(image, _uniform(max(0.0, 1 - amount), 1 + amount, g))
            elif s.hue > 0:
                image = TF.adjust_hue(image, _uniform(-s.hue, s.hue, g))
        return image

"""DACE and DM-Count against independent computations: by hand, and POT's Sinkhorn."""

import math

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from clip_ebc.bins import make_bins
from clip_ebc.train.losses import DACELoss, DMCountLoss, sinkhorn


def test_sinkhorn_matches_pot():
    rng = np.random.default_rng(0)
    a = rng.random(5)
    a /= a.sum()
    b = rng.random(9)
    b /= b.sum()
    cost = rng.random((5, 9)) * 3
    u, v, kernel = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(cost), reg=0.5, max_iter=1000,
                            stop_threshold=1e-14)
    plan = (u[:, None] * kernel * v[None, :]).numpy()
    expected = ot.sinkhorn(a, b, cost, 0.5, numItermax=1000, stopThr=1e-12)
    np.testing.assert_allclose(plan, expected, atol=1e-8)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-8)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-8)


def test_sinkhorn_keeps_the_last_finite_scaling():
    # exp(-C/eps) overflows for a large negative cost: the first update gives inf * 0 = NaN, and, as
    # upstream, the previous (initial, uniform) u and v are kept
    cost = torch.tensor([[-1e5, 0.0], [0.0, 0.0]])
    u, v, _ = sinkhorn(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), cost, reg=10.0)
    assert u.tolist() == [0.5, 0.5] and v.tolist() == [0.5, 0.5]


def dm_terms(density, target, points, input_size=16, block=8):
    loss_fn = DMCountLoss(input_size, block)
    d = density.clone().requires_grad_(True)
    loss, info = loss_fn(d, target, points)
    loss.backward()
    return loss, info, d.grad


def test_dmcount_one_point_by_hand():
    """One point: the plan sends all its mass to the normalised prediction, so beta = eps*log(b) + C
    (up to a constant), and the transport gradient is beta/P - <D, beta>/P^2 (spec §5.4)."""
    density = torch.tensor([[[[0.2, 0.5], [0.1, 0.4]]]])  # 2x2 blocks of 8 px: P = 1.2
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    points = [torch.tensor([[3.0, 5.0]])]  # x, y in pixels, inside block (0, 0)
    loss, info, grad = dm_terms(density, target, points)

    d = density.flatten().double().numpy()
    total = d.sum()
    centres = np.array([4.0, 12.0])
    cost = np.array([(5 - cy) ** 2 + (3 - cx) ** 2 for cy in centres for cx in centres])  # y-major
    b = d / total
    beta = 10 * np.log(b / np.exp(-cost / 10) + 1e-16)  # v = b / K with u = 1
    g_ot = beta / total - (d * beta).sum() / total**2
    t = np.array([1.0, 0, 0, 0])
    tv = 1.0 * np.abs(b - t).sum()
    # the gradient of G * sum|D/P - T/G| with respect to D
    s = np.sign(b - t)
    g_tv = (s / total - (s * d).sum() / total**2) * 1.0
    g_count = np.sign(total - 1.0)
    assert float(info["count_loss"]) == pytest.approx(abs(total - 1.0), abs=1e-6)
    assert float(info["tv_loss"]) == pytest.approx(tv, abs=1e-6)
    assert float(info["ot_loss"]) == pytest.approx(float((d * g_ot).sum()), abs=1e-5)  # ~0 by construction
    np.testing.assert_allclose(grad.flatten().double().numpy(), 0.1 * g_ot + 0.01 * g_tv + g_count, rtol=1e-4, atol=1e-5)
    assert float(loss.detach()) == pytest.approx(0.1 * float(info["ot_loss"]) + 0.01 * tv + abs(total - 1.0), abs=1e-5)


def test_dmcount_images_without_people():
    density = torch.tensor([[[[0.2, 0.3], [0.0, 0.5]]], [[[0.1, 0.1], [0.1, 0.1]]]])
    target = torch.zeros_like(density)
    target[1, 0, 0, 0] = 2
    points = [torch.zeros(0, 2), torch.tensor([[1.0, 1.0], [2.0, 2.0]])]
    loss, info, grad = dm_terms(density, target, points)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # count: mean of |1.0 - 0| and |0.4 - 2|; tv: image 0 contributes 0 (G = 0)
    assert float(info["count_loss"]) == pytest.approx((1.0 + 1.6) / 2, abs=1e-6)
    b1 = density[1].flatten() / 0.4
    assert float(info["tv_loss"]) == pytest.approx(float(2 * (b1 - torch.tensor([1.0, 0, 0, 0])).abs().sum()) / 2, abs=1e-6)


def test_dmcount_needs_the_crop_grid():
    with pytest.raises(ValueError, match="needs 2x2 density maps for 16-pixel crops"):
        DMCountLoss(16, 8)(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), [torch.zeros(0, 2)])


def test_dace_cross_entropy_and_count_losses():
    torch.manual_seed(0)
    bins = make_bins(4)
    logits = torch.randn(2, 5, 2, 2)
    density = torch.rand(2, 1, 2, 2) * 3
    counts = torch.tensor([[[[0.0, 1.0], [4.0, 9.0]]], [[[2.0, 3.0], [0.0, 0.0]]]])
    labels = torch.tensor([[[0, 1], [4, 4]], [[2, 3], [0, 0]]])
    expected_ce = F.cross_entropy(logits, labels, reduction="none").sum(dim=(1, 2)).mean()
    for kind, count in [("mae", (density - counts).abs().sum(dim=(1, 2, 3)).mean()),
                        ("mse", ((density - counts) ** 2).sum(dim=(1, 2, 3)).mean())]:
        loss, info = DACELoss(bins, 8, count_loss=kind, weight_count_loss=0.5)(logits, density, counts, [])
        assert float(info["ce_loss"]) == pytest.approx(float(expected_ce), rel=1e-6)
        assert float(info[f"{kind}_loss"]) == pytest.approx(float(count), rel=1e-6)
        assert float(loss) == pytest.approx(float(expected_ce + 0.5 * count), rel=1e-6)
    points = [torch.tensor([[3.0, 3.0]] * 1 + [[11.0, 3.0]] + [[3.0, 11.0]] * 4 + [[11.0, 11.0]] * 9),
              torch.tensor([[11.0, 3.0]] * 2 + [[3.0, 11.0]] * 3)]
    loss, info = DACELoss(bins, 8, count_loss="dmcount", input_size=16)(logits, density, counts, points)
    assert set(info) == {"loss", "ce_loss", "ot_loss", "tv_loss", "count_loss"}
    dm, dm_info = DMCountLoss(16, 8)(density, counts, points)
    assert float(loss) == pytest.approx(float(expected_ce + dm), rel=1e-6)
    assert all(float(info[k]) == pytest.approx(float(dm_info[k]), rel=1e-6) for k in dm_info)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_run_in_float32_under_autocast(dtype):
    torch.manual_seed(1)
    bins = make_bins(4)
    logits = torch.randn(2, 5, 2, 2).to(dtype)
    density = (torch.rand(2, 1, 2, 2) * 3).to(dtype)
    counts = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    points = [torch.tensor([[3.0, 11.0], [11.0, 3.0]]), torch.tensor([[2.0, 2.0], [3.0, 3.0]])]
    loss_fn = DACELoss(bins, 8, count_loss="dmcount", input_size=16)
    reference, _ = loss_fn(logits.float(), density.float(), counts, points)
    with torch.autocast("cpu", dtype=dtype):
        loss, _ = loss_fn(logits, density, counts, points)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(reference), rel=1e-6)
    assert math.isfinite(float(loss))

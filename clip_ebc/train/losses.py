"""Training losses: DACE (blockwise cross-entropy plus a count loss) and DM-Count.

Constants and arithmetic follow the official code (spec §5.3, §5.4), which follows DM-Count (Wang et
al., NeurIPS 2020). Both losses run in float32 with autocast switched off inside, so mixed-precision
training computes them exactly as full precision does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bins import Bin, counts_to_labels
from .settings import COUNT_LOSSES

EPS = 1e-8
SINKHORN_EPS = 1e-16


def sinkhorn(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    reg: float,
    max_iter: int = 100,
    stop_threshold: float = 1e-9,
    check_every: int = 10,
) -> tuple[Tensor, Tensor, Tensor]:
    """Entropic optimal transport between ``a`` (n,) and ``b`` (m,) for ``cost`` (n, m), by Sinkhorn's
    matrix scaling. Returns (u, v, K): the plan is ``u[:, None] * K * v[None, :]``.

    As upstream: u and v start uniform, 1e-16 is added inside the divisions, the squared marginal error
    ``||b - b_hat||^2`` is checked every ``check_every`` iterations against ``stop_threshold``, and on a
    NaN or infinity the previous u, v are kept and the loop stops.
    """
    n, m = cost.shape
    u = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    v = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)
    kernel = torch.exp(cost / -reg)
    for it in range(1, max_iter + 1):
        u_prev, v_prev = u, v
        v = b / (u @ kernel + SINKHORN_EPS)
        u = a / (kernel @ v + SINKHORN_EPS)
        if not (torch.isfinite(u).all() and torch.isfinite(v).all()):
            u, v = u_prev, v_prev
            break
        if it % check_every == 0:
            error = float(((b - (u @ kernel) * v) ** 2).sum())
            if error <= stop_threshold:
                break
    return u, v, kernel


class DMCountLoss(nn.Module):
    """DM-Count: 0.1 x optimal transport + 0.01 x total variation + count L1 (spec §5.4).

    density: (B, 1, h, w) predicted people per block, with h = w = input_size / block_size (training crops
    are square). target_counts: (B, 1, h, w) annotated people per block. points: B tensors (N_i, 2) of
    (x, y) in crop pixels; their number is the ground-truth count (duplicates included, as upstream).
    """

    def __init__(
        self,
        input_size: int,
        block_size: int,
        *,
        weight_ot: float = 0.1,
        weight_tv: float = 0.01,
        reg: float = 10.0,
        max_iter: int = 100,
    ) -> None:
        super().__init__()
        if input_size % block_size:
            raise ValueError(f"input_size {input_size} must be a multiple of the block size {block_size}.")
        self.input_size, self.block_size = input_size, block_size
        self.weight_ot, self.weight_tv, self.reg, self.max_iter = weight_ot, weight_tv, reg, max_iter
        # block centres in pixels (not normalised), as upstream
        self.register_buffer("centres", torch.arange(0, input_size, block_size, dtype=torch.float32) + block_size / 2,
                             persistent=False)

    def forward(self, density: Tensor, target_counts: Tensor, points: Sequence[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        cells = self.input_size // self.block_size
        if tuple(density.shape[-2:]) != (cells, cells):
            raise ValueError(f"DM-Count needs {cells}x{cells} density maps for {self.input_size}-pixel crops, "
                             f"got {tuple(density.shape[-2:])}.")
        with torch.autocast(device_type=density.device.type, enabled=False):
            density = density.float()
            target_counts = target_counts.float()
            pred_count = density.flatten(1).sum(1)
            gt_count = torch.tensor([float(len(p)) for p in points], device=density.device)
            normed = density / (pred_count.view(-1, 1, 1, 1) + EPS)
            normed_target = target_counts / (gt_count.view(-1, 1, 1, 1) + EPS)

            ot = density.new_zeros(())
            centres = self.centres.to(density.device)
            for i, pts in enumerate(points):
                if len(pts) == 0:
                    continue  # an image without people adds no transport term
                pts = pts.float().to(density.device)
                dx = (pts[:, 0:1] - centres[None]) ** 2  # (N, w)
                dy = (pts[:, 1:2] - centres[None]) ** 2  # (N, h)
                cost = (dy[:, :, None] + dx[:, None, :]).reshape(len(pts), -1)  # y-major (N, h*w)
                a = torch.full((len(pts),), 1.0 / len(pts), device=density.device)
                _, v, _ = sinkhorn(a, normed[i, 0].reshape(-1).detach(), cost, self.reg, self.max_iter)
                beta = self.reg * torch.log(v + SINKHORN_EPS)
                source = density[i, 0].reshape(-1).detach()
                total = source.sum()
                # gradient of the OT objective with respect to the unnormalised density
                gradient = total / (total * total + EPS) * beta - (source * beta).sum() / (total * total + EPS)
                ot = ot + (density[i, 0].reshape(-1) * gradient.detach()).sum()

            tv = ((normed - normed_target).abs().sum(dim=(1, 2, 3)) * gt_count).mean()
            count = (pred_count - gt_count).abs().mean()
            loss = self.weight_ot * ot + self.weight_tv * tv + count
        info = {"ot_loss": ot.detach(), "tv_loss": tv.detach(), "count_loss": count.detach()}
        return loss, info


class DACELoss(nn.Module):
    """Distribution-aware classification-error loss: blockwise cross-entropy + weight x count loss.

    The cross-entropy between the logits (B, n_bins, h, w) and each block's bin is summed over blocks
    and averaged over the batch; the count loss is DM-Count (``"dmcount"``, every documented official
    run), or the L1 (``"mae"``, the official trainer's default) or squared error (``"mse"``) between
    predicted and annotated block counts, summed over blocks and averaged over the batch.
    """

    def __init__(
        self,
        bins: Sequence[Bin],
        block_size: int,
        *,
        count_loss: str = "dmcount",
        weight_count_loss: float = 1.0,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if count_loss not in COUNT_LOSSES:
            raise ValueError(f"count_loss must be one of {COUNT_LOSSES}, got {count_loss!r}.")
        if count_loss == "dmcount" and input_size is None:
            raise ValueError("the DM-Count loss needs the training crop size (input_size).")
        self.bins = [tuple(b) for b in bins]
        self.block_size = block_size
        self.count_loss = count_loss
        self.weight_count_loss = weight_count_loss
        self.dmcount = DMCountLoss(input_size, block_size) if count_loss == "dmcount" else None  # type: ignore[arg-type]

    def forward(
        self, logits: Tensor, density: Tensor, target_counts: Tensor, points: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            labels = counts_to_labels(target_counts[:, 0].float(), self.bins)
            ce = F.cross_entropy(logits.float(), labels, reduction="none").sum(dim=(1, 2)).mean()
            if self.dmcount is not None:
                count, info = self.dmcount(density, target_counts, points)
            else:
                diff = density.float() - target_counts.float()
                count = (diff.abs() if self.count_loss == "mae" else diff**2).sum(dim=(1, 2, 3)).mean()
                info = {f"{self.count_loss}_loss": count.detach()}
            loss = ce + self.weight_count_loss * count
        return loss, {"loss": loss.detach(), "ce_loss": ce.detach(), **info}

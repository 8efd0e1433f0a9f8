"""The CLIP-EBC model: image encoder, decoder, projection and a cosine-similarity head over bins.

A forward pass (spec §0, §1.9)::

    image (B, 3, H, W), normalised
      -> image encoder: (B, C_enc, H/s, W/s)             s = encoder stride (16/32 ResNet, patch ViT)
      -> bilinear resize by s/r to the block grid         r = block size ("reduction")
      -> decoder block(s) -> 1x1 projection: (B, E, h, w)
      -> cosine similarity with the text embedding of each bin's prompt, x exp(logit_scale): logits
      -> softmax over bins -> expectation with the anchor points: density (B, 1, h, w)

The text embeddings are computed once (by :mod:`clip_ebc.text`, at conversion or training time) and
stored in the checkpoint as the buffer ``text_embeddings``; no text tower is built here.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from .backbones import build_image_encoder
from .config import ModelConfig
from .decoder import build_decoder, init_conv_bn
from .constants import CONFIG_NAME, WEIGHTS_NAME
from .errors import CheckpointError, ConfigError, ModelNotFoundError
from .fetch import checkpoint_folder, fetch_hub_checkpoint, parse_hf_id

LOGIT_SCALE_INIT = math.log(1 / 0.07)
"""Initial ``logit_scale`` of a new model (upstream's; not CLIP's trained temperature)."""


class CLIPEBCOutput(NamedTuple):
    """What :class:`CLIPEBC` returns, in train and eval mode alike."""

    logits: Tensor
    """(B, n_bins, h, w) float: scaled cosine similarities between blocks and bin prompts."""
    probs: Tensor
    """(B, n_bins, h, w) float: softmax of ``logits`` over bins."""
    density: Tensor
    """(B, 1, h, w) float: expected people per block; the image count is its sum."""


class CLIPEBC(nn.Module, PyTorchModelHubMixin):  # the Hub card's metadata is in card.py
    """CLIP-EBC: counts people as a blockwise classification over count bins.

    Build a new model from a :class:`~clip_ebc.ModelConfig` (random weights, zero text embeddings; see
    :func:`clip_ebc.text.encode_prompts`), or load one with :meth:`from_pretrained`.
    ``model(x)`` takes an ImageNet-normalised float tensor (B, 3, H, W) and returns a
    :class:`CLIPEBCOutput` with the density at ``(H/r, W/r)`` resolution (see :meth:`output_size`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"CLIPEBC needs a ModelConfig, got {type(config).__name__}.")
        self.config = config
        arch = config.architecture
        self.image_encoder = build_image_encoder(config)
        self.decoder, channels = build_decoder(
            self.image_encoder.out_channels, config.decoder_channels, bottleneck=arch.is_resnet
        )
        # Upstream skips the projection when the widths already agree (never for its backbones).
        self.projection: nn.Module = (
            nn.Conv2d(channels, arch.embed_dim, kernel_size=1) if channels != arch.embed_dim else nn.Identity()
        )
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float32))
        self.register_buffer("text_embeddings", torch.zeros(config.num_bins, arch.embed_dim))
        self.register_buffer("anchor_points", torch.tensor(config.anchor_points, dtype=torch.float32))
        init_conv_bn(self.decoder)
        init_conv_bn(self.projection)

    # ----------------------------------------------------------------------------------- forward

    @property
    def block_size(self) -> int:
        """Side of the square image block one density cell covers, in pixels (the reduction r)."""
        return self.config.reduction

    def encode(self, x: Tensor) -> Tensor:
        """Image features on the block grid, before the decoder: (B, C_enc, h, w). The input is cast to
        the dtype of the first convolution's weights (float32, or a lower precision the runtime holds
        them in)."""
        x = self.image_encoder(x.to(self.image_encoder.conv1.weight.dtype))
        stride, r = self.image_encoder.stride, self.config.reduction
        if stride != r:
            # A scale factor, not a target size: they differ for non-integer factors (ViT-L/14: 1.75).
            x = F.interpolate(x, scale_factor=stride / r, mode="bilinear", align_corners=False)
        return x

    def head(self, features: Tensor) -> CLIPEBCOutput:
        """Decoder, projection and the bin classifier on block-grid features (B, C_enc, h, w).

        The similarities, the softmax over bins and the expectation are computed in float32 even when
        the rest runs in lower precision under autocast.
        """
        x = self.projection(self.decoder(features))
        with _autocast_off(x.device.type):
            image = F.normalize(x.float().permute(0, 2, 3, 1), dim=-1)  # (B, h, w, E)
            text = F.normalize(self.text_embeddings.float(), dim=-1)  # (N, E)
            logits = (self.logit_scale.float().exp() * image @ text.t()).permute(0, 3, 1, 2)  # (B, N, h, w)
            probs = logits.softmax(dim=1)
            density = (probs * self.anchor_points.float().view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        return CLIPEBCOutput(logits=logits, probs=probs, density=density)

    def forward(self, x: Tensor) -> CLIPEBCOutput:
        """x: (B, 3, H, W) normalised image -> logits/probs (B, N, h, w), density (B, 1, h, w)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}.")
        return self.head(self.encode(x))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The density map's (h, w) for an (H, W) input."""
        return _grid_after(height, self.config), _grid_after(width, self.config)

    # ------------------------------------------------------------------------------- save / load

    def set_text_embeddings(self, embeddings: Tensor) -> None:
        """Store the prompts' text embeddings: (n_bins, embed_dim), as the CLIP text tower returns them."""
        if tuple(embeddings.shape) != tuple(self.text_embeddings.shape):
            raise ConfigError(
                f"text embeddings must have shape {tuple(self.text_embeddings.shape)} (bins x embed "
                f"dim), got {tuple(embeddings.shape)}."
            )
        with torch.no_grad():
            self.text_embeddings.copy_(embeddings)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (called by ``save_pretrained``, which then writes
        the model card ``README.md``)."""
        from safetensors.torch import save_file

        with torch.device("meta"):
            reference = CLIPEBC(self.config)
        if reference.state_dict().keys() != self.state_dict().keys():
            raise CheckpointError(
                "this model's layers no longer match its config (it was prepared for inference: BatchNorm folded "
                "into the convolutions), so it cannot be saved as a checkpoint; save the model before preparing "
                "it, or load it again."
            )
        save_directory = Path(save_directory)
        # huggingface_hub keeps an existing README.md; a card left from an earlier save would describe another model
        (save_directory / "README.md").unlink(missing_ok=True)
        self.config.to_json(save_directory / CONFIG_NAME)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "clip-ebc"})

    def generate_model_card(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        """The ``README.md`` that ``save_pretrained`` writes: see :func:`clip_ebc.card.model_card_text`."""
        from huggingface_hub import ModelCard

        from .card import model_card_text

        return ModelCard(model_card_text(self.config, **kwargs))

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        **_: Any,
    ) -> CLIPEBC:
        """Load a model saved with :meth:`save_pretrained`: a local directory or a Hub repo id
        (``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are honoured).

        Loading is strict: a tensor missing from ``model.safetensors``, an unexpected one, or one
        with the wrong shape raises :class:`~clip_ebc.errors.CheckpointError`. The model is
        returned in eval mode.
        """
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            config_file, weights_file = checkpoint_folder(path)
        else:
            text = str(pretrained_model_name_or_path)
            if path.exists() or text.startswith((".", "/", "~")) or text.removeprefix("hf-hub:").count("/") != 1:
                raise ModelNotFoundError(f"{text} is neither a checkpoint folder nor a Hub repository id (ORG/NAME).")
            repo_id, at = parse_hf_id(text)
            config_file, weights_file = fetch_hub_checkpoint(
                repo_id, revision or at, cache_dir=cache_dir, offline=local_files_only or None,
                force_download=force_download, token=token,
            )
        return load_checkpoint(config_file, weights_file, map_location=map_location)


def _autocast_off(device_type: str):
    """A context that disables autocast for ``device_type`` if it is on (and does nothing otherwise)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # torch < 2.4 takes no device type; meta has no autocast
        enabled = device_type == "cpu" and torch.is_autocast_cpu_enabled() or (
            device_type == "cuda" and torch.is_autocast_enabled()
        )
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


def _grid_after(size: int, config: ModelConfig) -> int:
    """Density cells along one side of an input of ``size`` pixels (spec §1.3, §1.5, §1.9)."""
    arch = config.architecture
    if arch.is_resnet:
        n = (size + 1) // 2  # conv1, stride 2, padding 1
        for _ in range(config.encoder_stride.bit_length() - 2):  # stem pool, layer2, layer3 (and layer4 at 32)
            n //= 2
    else:
        n = size // int(arch.vision_patch_size)  # type: ignore[arg-type]
    stride = config.encoder_stride
    return n if stride == config.reduction else math.floor(n * stride / config.reduction)


def load_checkpoint(
    config_file: str | os.PathLike[str],
    weights_file: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
) -> CLIPEBC:
    """Build the model of ``config_file`` and load ``weights_file`` (safetensors) into it strictly.

    The model is built on the meta device, so no time is spent on a random initialisation that the
    weights would overwrite.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = ModelConfig.from_json(Path(config_file))
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {weights_file} as safetensors ({e}); re-download or re-save it.") from e
    with torch.device("meta"):
        model = CLIPEBC(config)
    check_state_dict(model, state, source=f"{weights_file} does not fit the model its {Path(config_file).name} describes")
    # a sum is NaN or infinite when some element is (and a float32 sum of finite weights, which are far below
    # 1e30, cannot overflow); half-precision files are summed in float32, where their range fits
    broken = [k for k, v in state.items() if v.is_floating_point()
              and not math.isfinite(v.sum(dtype=torch.float32 if v.element_size() < 4 else None))]
    if broken:
        raise CheckpointError(
            f"{weights_file} holds NaN or infinite values in {_preview(broken)}; the checkpoint is damaged or the "
            "training diverged. Re-download or re-convert it."
        )
    # weights stored in half precision are loaded as float32, the dtype the model computes in
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    anchors = torch.tensor(config.anchor_points, dtype=model.anchor_points.dtype)
    if not torch.equal(model.anchor_points.cpu(), anchors):
        raise CheckpointError(
            f"the anchor points in {weights_file} ({model.anchor_points.tolist()}) differ from those in "
            f"{config_file} ({list(config.anchor_points)}); the two files do not belong together."
        )
    return model.to(map_location).eval()


def check_state_dict(
    model: nn.Module,
    state: dict[str, Tensor],
    *,
    source: str,
    advice: str = "The file is incomplete or belongs to a different configuration; re-download or re-convert it.",
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the model's keys and shapes.

    The message is ``"{source}: {what is wrong}. {advice}"``.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and isinstance(state[k], Tensor) and tuple(state[k].shape) != tuple(v.shape)
    ]
    # any floating-point dtype is converted on loading; integers or booleans in place of weights are not
    wrong_type = [
        f"{k} {str(state[k].dtype).replace('torch.', '')} (expected {'floating point' if v.is_floating_point() else v.dtype})"
        for k, v in expected.items()
        if k in state and isinstance(state[k], Tensor) and (
            state[k].is_floating_point() != v.is_floating_point()
            or (not v.is_floating_point() and state[k].dtype != v.dtype))
    ]
    not_tensors = [k for k in expected if k in state and not isinstance(state[k], Tensor)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_preview(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: {_preview(wrong)}")
    if wrong_type:
        problems.append(f"{len(wrong_type)} tensor(s) of the wrong type: {_preview(wrong_type)}")
    if not_tensors:
        problems.append(f"{len(not_tensors)} entries that are not tensors: {_preview(not_tensors)}")
    if problems:
        raise CheckpointError(
            f"{source}: " + "; ".join(problems) + ". " + advice
        )


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

"""Where and how a model runs: the device, the compute precision, and inference preparation.

* :func:`select_device` turns ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"`` into a device that exists.
* :func:`resolve_precision` turns ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"`` into a
  dtype that runs natively on the device: bfloat16 on CPUs with native bfloat16 arithmetic
  (AVX512-BF16 or AMX on x86, the BF16 extension on ARM), float16 or bfloat16 on CUDA. Emulated
  bfloat16, which is slower than float32, is never chosen and is refused when asked for.
* :func:`fold_batchnorm` merges every eval-mode BatchNorm into the convolution before it. In float32
  the result equals the unfolded model up to rounding (tests check 1e-5); a folded model no longer
  matches its config's structure, so ``save_pretrained`` refuses it.
* Lower precision runs the encoder and decoder under autocast; the model's head computes the
  similarities, the softmax over bins, the expectation and the sum in float32.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU. Otherwise the named device, checked."""
    if isinstance(device, torch.device):
        device = str(device)  # checked like a name: torch.device("cuda:1") exists on any machine
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"{device!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from e
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{device!r} is not a device clip-ebc runs on; use auto, cpu, cuda, cuda:N or mps.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested, but CUDA is not available here; use --device cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s).")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r} was requested, but Apple MPS is not available here; use --device cpu.")
    return dev


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d (with bias) computing ``bn(conv(x))`` with ``bn``'s running statistics.

    The per-channel scale and the bias are computed in float64 and rounded once; the weights are
    multiplied in their own dtype (a float64 copy of a ResNet's 70 M weights costs a third of a second
    of loading, for differences below 1e-7 relative).
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    # built on the meta device: a random initialisation here would only be overwritten
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode, device="meta")
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter(conv.weight * scale.to(dtype).view(-1, 1, 1, 1), requires_grad=False)
    fused.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(dtype),
                              requires_grad=False)
    return fused


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each BatchNorm2d into the Conv2d that feeds it, in place; returns how many were folded.

    Folds the pairs ``convN``/``bnN`` of a module (open_clip's ResNet stem and bottlenecks, the
    decoder blocks) and consecutive ``Conv2d``, ``BatchNorm2d`` children of a ``Sequential`` (the
    shortcuts). The model must be in eval mode: folding uses the running statistics.
    """
    if model.training:
        raise ConfigError("fold_batchnorm needs a model in eval mode (call model.eval() first).")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a] = fuse_conv_bn(conv, bn)
                    module._modules[b] = nn.Identity()
                    folded += 1
            continue
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and name.startswith("conv"):
                bn = getattr(module, "bn" + name[len("conv"):], None)
                if isinstance(bn, nn.BatchNorm2d):
                    setattr(module, name, fuse_conv_bn(child, bn))
                    setattr(module, "bn" + name[len("conv"):], nn.Identity())
                    folded += 1
    return folded


@functools.lru_cache(maxsize=1)
def native_cpu_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (not emulated in float32)."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") and platform.system() == "Darwin":
        return False  # Apple silicon CPUs: bfloat16 runs through slow paths in PyTorch
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)


def resolve_precision(precision: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    ``"auto"`` is bfloat16 on CPUs that compute it natively (2-3x float32's speed; counts move by about
    0.01-0.1 %, see README "Speed"), float32 on other CPUs, float16 on CUDA and MPS. ``"float32"`` is the
    exact choice (what the parity tests pin).
    """
    if isinstance(precision, torch.dtype):
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(precision, str(precision))
    else:
        name = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (or fp32/bf16/fp16), got {precision!r}.")
    if name == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if native_cpu_bfloat16() else torch.float32
        return torch.float16
    dtype = getattr(torch, name)
    if device.type == "cpu":
        if dtype is torch.float16:
            raise ConfigError("float16 is not fast on CPUs; use precision='bfloat16' (if the CPU supports it) or 'float32'.")
        if dtype is torch.bfloat16 and not native_cpu_bfloat16():
            raise ConfigError(
                "this CPU has no native bfloat16 arithmetic (AVX512-BF16/AMX or ARM BF16), so bfloat16 would be "
                "emulated and slower than float32; use precision='float32'."
            )
    if device.type == "mps" and dtype is torch.bfloat16 and _torch_release() < (2, 6):
        raise ConfigError("bfloat16 autocast on Apple MPS needs PyTorch 2.6 or newer; use precision='float16'.")
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bfloat16; use precision='float16'.")
    return dtype


def _torch_release() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def prepare_for_inference(model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32, *,
                          onednn: bool = True) -> nn.Module:
    """Eval mode without gradients, BatchNorm folded, on ``device``; the convolution weights are put in
    channels-last memory format on CUDA and, for lower precisions, on CPUs, except those
    :func:`keep_aliasing_convs_nchw` keeps NCHW there (other tensors are unaffected). With a lower
    ``dtype`` the weights autocast would cast on every call are held in it (:func:`hold_weights_in`).
    On CPUs, transformer blocks compute through oneDNN (:func:`speed_up_transformer_blocks`) unless
    ``onednn=False`` (``torch.compile`` makes its own kernels and cannot trace those operators)."""
    model = model.eval().requires_grad_(False)
    fold_batchnorm(model)
    model = model.to(device)
    # float32 on CPUs stays NCHW: there oneDNN's blocked kernels ran RN50 2-13 % faster than channels-last
    # (448x448 to 1088x1088, benchmarks/RESULTS.md); bfloat16 and GPUs gain from channels-last.
    if device.type == "cuda" or (device.type == "cpu" and dtype != torch.float32):
        model = model.to(memory_format=torch.channels_last)
        if device.type == "cpu":
            keep_aliasing_convs_nchw(model, dtype)
    if dtype != torch.float32:
        hold_weights_in(model, dtype)
    if onednn and device.type == "cpu" and onednn_linear_available():
        speed_up_transformer_blocks(model)
    return model


def _to_nchw(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def _to_channels_last(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous(memory_format=torch.channels_last)


def keep_aliasing_convs_nchw(model: nn.Module, dtype: torch.dtype) -> int:
    """In a channels-last model for a CPU, run the convolutions larger than 1x1 whose channels-last pixel
    is a multiple of 4 KiB (``in_channels * itemsize``, e.g. 2048 or 4096 bfloat16 channels) in NCHW
    instead; returns how many. Inputs are made NCHW before them and outputs channels-last after them.

    Why: measured, not derived. A likely cause is that oneDNN's channels-last (brgemm) kernels then read
    neighbouring pixels 4 KiB apart, addresses that compete for the same cache sets, while its blocked
    kernels behind NCHW read channel blocks. Measured on a Zen 4 CPU in bfloat16
    (``benchmarks/bench_layout.py --convs``, ``benchmarks/RESULTS.md``): channels-last took 7-35 % longer
    than NCHW for the 3x3 2048-channel convolution of the RN50 decoder (more than half of the model's
    time) at every feature-map size tried, and 16 % longer at 4096 channels, while 3x3 convolutions over
    256 to 1536, 2560 and 3072 channels were 0-5 % faster channels-last.
    """
    changed = 0
    for module in model.modules():
        if not (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1) and module.groups == 1
                and tuple(module.dilation) == (1, 1) and module.in_channels * dtype.itemsize % 4096 == 0):
            continue  # only plain convolutions of that kind were measured
        module.weight.data = module.weight.data.contiguous()  # again if the model was prepared before
        if not getattr(module, "_clip_ebc_nchw", False):  # hooks once, however often the model is prepared
            module.register_forward_pre_hook(_to_nchw)
            module.register_forward_hook(_to_channels_last)
            module._clip_ebc_nchw = True
        changed += 1
    return changed


HELD_MODULES = (nn.Conv2d, nn.Linear, nn.MultiheadAttention)
"""The modules whose weights autocast casts to the lower precision: their products dominate the work."""


@torch.no_grad()
def hold_weights_in(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the weights and biases of every convolution, linear layer and attention to ``dtype``, in
    place, once (autocast would cast them again on every forward pass); returns how many modules.

    Everything else stays float32, as under autocast: LayerNorms (computed in float32), embeddings,
    visual prompts, and the head (similarities, softmax over bins, expectation). The model then runs
    without autocast on inputs of ``dtype`` (:meth:`CLIPEBC.encode` casts them), and computes what it
    computes under autocast (``tests/test_runtime.py`` compares the two). Inference only: the model's
    own float32 weights are gone.
    """
    held = 0
    for module in model.modules():
        if isinstance(module, (*HELD_MODULES, OneDNNMLP, OneDNNAttention)):  # the latter: prepared before
            module.to(dtype)
            held += 1
    return held


# --------------------------------------------------------------------------------------------------
# Transformer blocks on CPUs: products through oneDNN
# --------------------------------------------------------------------------------------------------
#
# On x86 CPUs PyTorch sends float32 linear layers to MKL, whose AMD code path is AVX2: on CPUs with a
# full-width AVX-512 unit it reaches half of what oneDNN's kernels (already used for convolutions and
# for bfloat16) do. The replacements below compute the same products through oneDNN, fuse CLIP's
# QuickGELU into the first MLP product, and run bfloat16 attention as two batched products (twice as
# fast as the fused attention kernel at ViT sequence lengths, measured in benchmarks/RESULTS.md).

QUICK_GELU = 1.702
"""QuickGELU(x) = x sigmoid(1.702 x) = silu(1.702 x) / 1.702: the 1.702 moves into the weights."""


def onednn_linear_available() -> bool:
    """Whether this PyTorch has oneDNN's fused linear operator (``torch.ops.mkldnn._linear_pointwise``)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, post: str = "none") -> torch.Tensor:
    """``F.linear`` (then ``silu`` when ``post="swish"``) through oneDNN, for any leading dimensions."""
    shape = x.shape
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), weight, bias, post, [], "")
    return y.view(*shape[:-1], y.shape[-1])


class OneDNNMLP(nn.Module):
    """CLIP's ``c_fc -> QuickGELU -> c_proj`` as ``silu(1.702 c_fc) -> c_proj / 1.702``, both products
    through oneDNN with the silu fused into the first (the rescaled weights are computed in float64 and
    rounded once, in the weights' dtype)."""

    def __init__(self, c_fc: nn.Linear, c_proj: nn.Linear) -> None:
        super().__init__()
        dtype = c_fc.weight.dtype
        self.w1 = nn.Parameter((c_fc.weight.double() * QUICK_GELU).to(dtype), requires_grad=False)
        self.b1 = nn.Parameter((c_fc.bias.double() * QUICK_GELU).to(dtype), requires_grad=False)
        self.w2 = nn.Parameter((c_proj.weight.double() / QUICK_GELU).to(dtype), requires_grad=False)
        self.b2 = nn.Parameter(c_proj.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _onednn_linear(_onednn_linear(x, self.w1, self.b1, "swish"), self.w2, self.b2)


class OneDNNAttention(nn.Module):
    """``nn.MultiheadAttention`` (sequence-first, self-attention, no mask) with its projections through
    oneDNN; float32 keeps PyTorch's fused attention kernel (the official numerics), lower precisions use
    two batched products with the softmax between them. Called like the module it replaces."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads = mha.num_heads
        self.in_proj_weight, self.in_proj_bias = mha.in_proj_weight, mha.in_proj_bias
        self.out_weight, self.out_bias = mha.out_proj.weight, mha.out_proj.bias

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, None]:
        length, batch, width = query.shape
        heads = self.num_heads
        qkv = _onednn_linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(length, batch, 3, heads, width // heads).permute(2, 1, 3, 0, 4)  # (N, H, L, d) each
        if query.dtype == torch.float32:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = torch.matmul(q * (width // heads) ** -0.5, k.transpose(-1, -2))
            out = torch.matmul(scores.softmax(-1), v)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
        return _onednn_linear(out, self.out_weight, self.out_bias), None


def speed_up_transformer_blocks(model: nn.Module) -> int:
    """Replace, in place, the attention and MLP of every CLIP transformer block (ViT encoders) with
    :class:`OneDNNAttention` and :class:`OneDNNMLP`; returns how many blocks. CPU inference only."""
    from .backbones import ResidualAttentionBlock

    blocks = [m for m in model.modules() if isinstance(m, ResidualAttentionBlock)
              and isinstance(m.attn, nn.MultiheadAttention)]  # a model prepared before is left as it is
    for block in blocks:
        block.attn = OneDNNAttention(block.attn)
        block.mlp = OneDNNMLP(block.mlp.c_fc, block.mlp.c_proj)
    return len(blocks)

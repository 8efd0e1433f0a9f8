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

    The folded weights are computed in float64 and rounded once, which keeps the folded model
    closer to the original than folding in float32.
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    # built on the meta device: a random initialisation here would only be overwritten
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode, device="meta")
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
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

    ``"auto"`` is float32 on the CPU (exact; bfloat16 is opt-in), float16 on CUDA and MPS.
    """
    if isinstance(precision, torch.dtype):
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(precision, str(precision))
    else:
        name = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (or fp32/bf16/fp16), got {precision!r}.")
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
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


def prepare_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode without gradients, BatchNorm folded, on ``device``; on CPU and CUDA the convolution
    weights are also put in channels-last memory format (other tensors are unaffected)."""
    model = model.eval().requires_grad_(False)
    fold_batchnorm(model)
    model = model.to(device)
    if device.type in ("cpu", "cuda"):
        model = model.to(memory_format=torch.channels_last)
    return model

"""Model cards (the ``README.md`` of a checkpoint folder or Hub repository)."""

from __future__ import annotations

import math
from typing import Any

from .config import ModelConfig

CITATION = """@article{ma2024clipebc,
  title   = {CLIP-EBC: CLIP Can Count Accurately through Enhanced Blockwise Classification},
  author  = {Ma, Yiming and Sanchez, Victor and Guha, Tanaya},
  journal = {arXiv preprint arXiv:2403.09281},
  year    = {2024}
}"""


def _bin_text(lo: float, hi: float) -> str:
    if math.isinf(hi):
        return f"{lo:g}+"
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


DATASET_NAMES = {
    "sha": "ShanghaiTech Part A",
    "shb": "ShanghaiTech Part B",
    "nwpu": "NWPU-Crowd",
    "qnrf": "UCF-QNRF",
    "jhu": "JHU-Crowd++",
}


def _metrics_section(metrics: list[dict[str, Any]] | None) -> str:
    if not metrics:
        return "No evaluation results are recorded for this checkpoint."
    rows = "\n".join(
        f"| {m.get('split', '?')} | {'-' if m.get('mae') is None else m['mae']} | "
        f"{'-' if m.get('rmse') is None else m['rmse']} | {m.get('source', '')} |"
        for m in metrics
    )
    return ("Reported by the authors of CLIP-EBC (not re-measured here):\n\n"
            "| split | MAE | RMSE | source |\n| --- | --- | --- | --- |\n" + rows)


def model_card_text(
    config: ModelConfig,
    *,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    description: str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    license_text: str | None = None,
    usage_id: str = "path/to/this/folder",
) -> str:
    """Markdown model card for a checkpoint with ``config``: YAML metadata, description, training data,
    architecture, bins and anchors, reported metrics, provenance, licence, intended and out-of-scope
    use, and the citation."""
    prov = dict(config.provenance)
    prov.update(extra or {})
    dataset = prov.get("dataset")
    rows = "\n".join(
        f"| {i} | {_bin_text(lo, hi)} | {a:g} | {p} |"
        for i, ((lo, hi), a, p) in enumerate(zip(config.bins, config.anchor_points, config.prompts or ()))
    )
    provenance = "\n".join(f"- **{k}**: {v}" for k, v in sorted(prov.items())) or "- not recorded"
    vpt = (
        f", {'deep' if config.deep_vpt else 'shallow'} VPT with {config.num_vpt} tokens per block"
        if config.is_vit and config.num_vpt
        else ""
    )
    meta = [
        "---",
        "library_name: clip-ebc",
        "license: mit",
        "pipeline_tag: image-feature-extraction",
        "tags:",
        "- crowd-counting",
        "- density-estimation",
        "- clip",
        "- clip-ebc",
        "---",
    ]
    return "\n".join(meta) + f"""

# {title or f"CLIP-EBC {config.backbone}" + (f" ({dataset})" if dataset else "")}

{description + chr(10) + chr(10) if description else ""}A [CLIP-EBC](https://arxiv.org/abs/2403.09281) crowd-counting model in the clip-ebc checkpoint
format (`config.json` + `model.safetensors`); the method's official implementation is
[Yiming-M/CLIP-EBC](https://github.com/Yiming-M/CLIP-EBC). It predicts a density map with one cell per {config.reduction}x{config.reduction}
pixel block; the cell values are expected people per block and their sum is the count.

## Training data

{DATASET_NAMES.get(str(dataset), dataset) if dataset else "Not recorded."}

## Model

- Backbone: CLIP {config.backbone} image encoder{vpt}, decoder {list(config.decoder_channels or ())}
- Block size: {config.reduction} pixels; {config.num_bins} count bins, the last for {config.bins[-1][0]:g} or more people
  per block{f" (truncation {prov['truncation']})" if "truncation" in prov else ""}
- Input: RGB normalised with mean {list(config.mean)} and std {list(config.std)}
- Text embeddings of the bin prompts are stored in the checkpoint; no text encoder is needed.

| bin | people per block | anchor | prompt |
| --- | --- | --- | --- |
{rows}

## Usage

```bash
# with clip-ebc installed (pip install from its repository)
crowdcount crowd.jpg --model {usage_id} --heatmap crowd_heatmap.png
```

```python
from clip_ebc import CrowdCounter

result = CrowdCounter("{usage_id}").count("crowd.jpg")
result.count, result.density  # people; (h, w) people per block
```

## Evaluation

{_metrics_section(metrics)}

## Provenance

{provenance}

## Licence

{license_text or "MIT, as the official implementation."}

## Intended use

Estimating the number and spatial distribution of people in still images of crowds, for research,
venue and city analytics. Counts are estimates with errors that grow with density, image size and
domain shift; validate on your own images before relying on them.

## Out-of-scope use

Identifying, tracking or recognising individuals; counting anything other than people; safety-critical
decisions (for example crowd-crush prevention) without independent verification.

## Citation

```bibtex
{CITATION}
```
"""

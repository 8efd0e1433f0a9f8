"""``python -m clip_ebc.convert SRC -o OUT``: convert an official CLIP-EBC checkpoint.

    python -m clip_ebc.convert checkpoints/sha/clip_resnet50_word_448_8_4_fine_1.0_dmcount_aug/best_mae_0.pth -o rn50-sha

reads the hyperparameters from the run-directory and dataset folder names when they are there, and
from flags otherwise (``--help`` lists them). torch is imported only once there is something to
convert, so ``--help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from ..bins import ANCHOR_KINDS, DATASETS, GRANULARITIES, PROMPT_TYPES
from ..config import BACKBONES, DecoderEntry
from ..errors import CLIPEBCError, ConversionError


@click.command(
    name="python -m clip_ebc.convert",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Directory to write config.json, model.safetensors and README.md into.")
@click.option("--run-name", help="Official run-directory name to read hyperparameters from "
              "(default: SRC's parent folder, e.g. clip_resnet50_word_448_8_4_fine_1.0_dmcount_aug).")
@click.option("--dataset", type=click.Choice(DATASETS),
              help="Training dataset (selects the 'average' anchor points; default: SRC's grandparent folder).")
@click.option("--backbone", help=f"One of {', '.join(BACKBONES)} (official names like clip_resnet50 work too).")
@click.option("--reduction", type=click.Choice(["8", "16", "32"]), help="Block size in pixels.")
@click.option("--truncation", type=int, help="Largest block count with a bin of its own.")
@click.option("--granularity", type=click.Choice(GRANULARITIES), help="Bin granularity (default fine).")
@click.option("--anchor-points", "anchor_kind", type=click.Choice(ANCHOR_KINDS), default="average",
              show_default=True, help="Which official anchor points the run used.")
@click.option("--anchor-values", help="Explicit anchor points, comma-separated (overrides --anchor-points).")
@click.option("--prompt-type", type=click.Choice(PROMPT_TYPES), help="Prompt wording (default word).")
@click.option("--input-size", type=int, help="Training input size (ViT: read from the weights if omitted).")
@click.option("--num-vpt", type=int, help="VPT tokens per block (read from the weights if omitted).")
@click.option("--shallow-vpt/--deep-vpt", "shallow", default=None,
              help="VPT kind (read from the weights if omitted).")
@click.option("--clip-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file with a custom CLIP architecture (official config fields).")
@click.option("--decoder-channels", help="Decoder widths, comma-separated (read from the weights if omitted).")
@click.option("--force", is_flag=True, help="Overwrite an existing output directory's files.")
def main(src: Path, out: Path, run_name, dataset, backbone, reduction, truncation, granularity,
         anchor_kind, anchor_values, prompt_type, input_size, num_vpt, shallow, clip_config,
         decoder_channels, force) -> None:
    """Convert an official CLIP-EBC checkpoint SRC (.pth or .safetensors) into a clip-ebc checkpoint."""
    from .official import convert_file  # torch and open_clip: only once there is something to convert

    try:
        if out.exists() and not out.is_dir():
            raise ConversionError(f"{out} is a file; -o names the folder to write the checkpoint into.")
        if out.exists() and any(out.iterdir()) and not force:
            raise ConversionError(f"{out} already exists and is not empty; choose another -o or pass --force.")
        clip = None
        if clip_config is not None:
            try:
                clip = json.loads(clip_config.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ConversionError(f"cannot read the CLIP config {clip_config}: {e}.") from e
            if not isinstance(clip, dict):
                raise ConversionError(f"the CLIP config {clip_config} must be a JSON object of architecture fields.")
            clip = clip.get("clip_config", clip)  # accept a fixture-style file holding the fields
        model = convert_file(
            src,
            run_name=run_name,
            dataset=dataset,
            backbone=backbone,
            reduction=None if reduction is None else int(reduction),
            truncation=truncation,
            granularity=granularity,
            anchor_kind=anchor_kind,
            anchor_values=_parse_floats(anchor_values),
            prompt_type=prompt_type,
            input_size=input_size,
            num_vpt=num_vpt,
            deep_vpt=None if shallow is None else not shallow,
            clip_config=clip,
            decoder_channels=_parse_decoder(decoder_channels),
        )
        model.save_pretrained(out)
    except CLIPEBCError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    cfg = model.config
    click.echo(
        f"Converted {src.name} -> {out}: {cfg.backbone}, block size {cfg.reduction}, {cfg.num_bins} bins "
        f"({', '.join(cfg.prompts or ())}), anchors {list(cfg.anchor_points)}."
    )



def _parse_floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as e:
        raise ConversionError(f"--anchor-values must be comma-separated numbers, got {text!r}.") from e


def _parse_decoder(text: str | None) -> list[DecoderEntry] | None:
    if text is None:
        return None
    out: list[DecoderEntry] = []
    for v in text.replace(" ", "").split(","):
        if v.upper() == "U":
            out.append("U")
        elif v.isdigit():
            out.append(int(v))
        else:
            raise ConversionError(f"--decoder-channels must be comma-separated integers or U, got {text!r}.")
    return out


def run(argv: Sequence[str] | None = None) -> None:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``)."""
    main(args=None if argv is None else list(argv))


if __name__ == "__main__":
    main()

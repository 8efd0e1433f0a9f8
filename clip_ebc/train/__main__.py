"""``python -m clip_ebc.train [PRESET] --data-root DIR [--option value ...]``: train or fine-tune.

Every field of :class:`~clip_ebc.train.trainer.TrainConfig` is an option (``--total-epochs 100``,
``--no-amp``...); values are taken from the preset, then from ``--config FILE.json``, then from the
command line. ``--list-presets`` shows the presets. Run under ``torchrun --nproc_per_node N`` for
several GPUs (or CPU processes).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import click

from ..errors import CLIPEBCError
from .presets import DESCRIPTIONS, PRESETS
from .settings import TrainConfig


def _field_type(annotation) -> tuple[type, bool]:
    """(click type, is_json) for a TrainConfig annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    base = typing.get_origin(args[0]) or args[0]
    if base in (dict, list):
        return str, True
    return base, False


def _with_field_options(command):
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        flag = f.name.replace("_", "-")
        kind, is_json = _field_type(hints[f.name])
        default = None if f.default is dataclasses.MISSING else f.default
        help_text = f.metadata.get("help", "")
        help_text += f" [default: {json.dumps(default) if is_json else default}]" if default not in (None, "") else ""
        if kind is bool:
            command = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=help_text)(command)
        else:
            command = click.option(f"--{flag}", f.name, type=kind if not is_json else str, default=None,
                                   help=help_text + (" (JSON)" if is_json else ""))(command)
    return command


@click.command(name="python -m clip_ebc.train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("preset", required=False)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file of TrainConfig fields (applied after the preset, before these options).")
@click.option("--list-presets", is_flag=True, help="List the presets and exit.")
@_with_field_options
def main(preset, config_file, list_presets, **options) -> None:
    """Train CLIP-EBC from a PRESET (see --list-presets), overriding any setting with options."""
    if list_presets:
        for name in PRESETS:
            click.echo(f"{name:14s} {DESCRIPTIONS.get(name, '')}")
        return
    values: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise click.UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        values.update(PRESETS[preset])
    if config_file is not None:
        try:
            values.update(json.loads(config_file.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise click.UsageError(f"{config_file} is not valid JSON: {e.msg} (line {e.lineno}).") from e
    hints = typing.get_type_hints(TrainConfig)
    for name, value in options.items():
        if value is None:
            continue
        if _field_type(hints[name])[1]:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise click.UsageError(f"--{name.replace('_', '-')} must be JSON: {e.msg}.") from e
        values[name] = value
    if not values.get("data_root"):
        raise click.UsageError("--data-root is required (a folder prepared with python -m clip_ebc.train.prepare).")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise click.UsageError(f"unknown settings {unknown} in --config.")
    try:
        config = TrainConfig(**values)  # settings are checked before torch is even imported
        from .trainer import fit

        result = fit(config)
    except CLIPEBCError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if result.final_checkpoint is not None:
        best = result.best.get("mae") or []
        click.echo(f"finished: {result.final_checkpoint}" + (f"; best val MAE {best[0][0]:.2f} (epoch {best[0][1]})" if best else ""))


if __name__ == "__main__":
    main()

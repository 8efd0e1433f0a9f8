"""Maintainer tool: publish a registry model as a converted copy on the Hugging Face Hub.

    python -m clip_ebc.publish vit_b16.nwpu --repo-id ORG/clip-ebc-vit-b16-nwpu

fetches the model's official release (or takes ``--checkpoint`` for weights without a download source),
converts it, writes a folder with ``config.json``, ``model.safetensors`` and a model card (licence,
training data, reported metrics, provenance, intended and out-of-scope use), uploads it with
``huggingface_hub``, and prints the manifest source entry (pinned revision and SHA-256 of each file)
to paste into ``weights_manifest.json``. ``--dry-run`` stops before the upload.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import CLIPEBCError, DownloadError
from .constants import CHECKPOINT_FILES
from .fetch import sha256_file
from .loading import convert_for, resolve_model
from .registry import ModelInfo, load_manifest


def build_folder(info: ModelInfo, out: Path, *, repo_id: str, checkpoint: Path | None = None) -> Path:
    """Convert the model of ``info`` (its release, or the official ``checkpoint`` file) into ``out``,
    with a model card; returns ``out``."""
    import shutil

    from .card import model_card_text
    from .config import ModelConfig

    card_kwargs = dict(
        title=f"CLIP-EBC {info.name}",
        description=info.description + ".",
        metrics=[dict(m) for m in info.metrics],
        license_text=info.license + ". The training images keep their own dataset licences.",
        extra={"registry_name": info.name, "original_provenance": info.provenance},
        usage_id=f"hf-hub:{repo_id}",
    )
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        convert_for(info, checkpoint).save_pretrained(out, model_card_kwargs=card_kwargs)
        return out
    if not any(s.type == "release" and s.usable for s in info.sources):
        raise DownloadError(f"{info.name} has no release to convert; pass --checkpoint with its official weights.")
    resolved = resolve_model(info.name, offline=False)  # converted once and verified, in the cache
    for f in (resolved.config_file, resolved.weights_file):
        shutil.copy2(f, out / f.name)
    config = ModelConfig.from_json(out / resolved.config_file.name)
    (out / "README.md").write_text(model_card_text(config, **card_kwargs), encoding="utf-8")
    return out


def manifest_source(repo_id: str, revision: str | None, folder: Path) -> dict[str, Any]:
    """The ``huggingface`` source entry for ``weights_manifest.json``."""
    return {"type": "huggingface", "repo_id": repo_id, "revision": revision,
            "files": {f: sha256_file(folder / f) for f in CHECKPOINT_FILES}}


def upload(folder: Path, repo_id: str, *, token: str | None = None, private: bool = False, api: Any = None) -> str:
    """Upload ``folder`` to the Hub model repo ``repo_id`` in one commit; returns the commit hash."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                               commit_message="Add clip-ebc checkpoint (config.json, model.safetensors, model card)")
    return str(commit.oid)


def _build_cli():
    import click

    @click.command(name="python -m clip_ebc.publish", context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("name")
    @click.option("--repo-id", required=True, help="Hub model repository to upload to, ORG/NAME.")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                  help="Folder to write the checkpoint into (default: ./publish/NAME).")
    @click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="Official .pth to convert instead of downloading the release.")
    @click.option("--token", help="Hub token (default: the one `hf auth login` stored).")
    @click.option("--private", is_flag=True, help="Create the repository as private.")
    @click.option("--dry-run", is_flag=True, help="Write the folder and print the entry, but do not upload.")
    def main(name, repo_id, out, checkpoint, token, private, dry_run) -> None:
        """Convert registry model NAME, upload it to the Hub, and print its manifest entry."""
        try:
            info = load_manifest().get(name)
            out = out or Path("publish") / name
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise CLIPEBCError(f"{out} already exists and is not an empty folder; choose another --out.")
            folder = build_folder(info, out, repo_id=repo_id, checkpoint=checkpoint)
            revision = None if dry_run else upload(folder, repo_id, token=token, private=private)
        except CLIPEBCError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - upload errors from huggingface_hub vary
            click.echo(f"error: upload to {repo_id} failed: {type(e).__name__}: {e}", err=True)
            sys.exit(1)
        where = "not uploaded (--dry-run)" if dry_run else f"uploaded to {repo_id}@{revision}"
        click.echo(f"{name}: {folder} {where}. Add this source first in its manifest entry:", err=True)
        click.echo(json.dumps(manifest_source(repo_id, revision, folder), indent=2))

    return main


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m clip_ebc.publish``."""
    _build_cli()(args=argv)


if __name__ == "__main__":
    main()

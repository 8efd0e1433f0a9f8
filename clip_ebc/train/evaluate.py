"""``python -m clip_ebc.train.evaluate MODEL DATA_ROOT``: MAE, RMSE and NAE of a model on a processed
split, or the NWPU-Crowd test-server file.

    python -m clip_ebc.train.evaluate runs/rn50-sha/best_mae_0 data/sha
    python -m clip_ebc.train.evaluate vit_b16.nwpu data/nwpu --split test --nwpu-submission results.txt

(The functions live in :mod:`clip_ebc.train.evaluation`; ``from clip_ebc.train import evaluate``.)
"""

from __future__ import annotations

import sys
from pathlib import Path



def _build_cli():
    import click

    @click.command(name="python -m clip_ebc.train.evaluate", context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("model")
    @click.argument("data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--split", default="val", show_default=True, help="Processed split to evaluate (test: NWPU, no labels).")
    @click.option("--sliding-window/--whole-image", default=None, help="Default: windows for ViT models.")
    @click.option("--window", type=int, help="Window side in pixels (default: the model's input size).")
    @click.option("--stride", type=int, help="Window stride (default: the window).")
    @click.option("--device", default="auto", show_default=True)
    @click.option("--nwpu-submission", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write the NWPU test-server file (use with --split test).")
    def main(model, data_root, split, sliding_window, window, stride, device, nwpu_submission) -> None:
        """Evaluate MODEL (registry name, checkpoint folder or hf-hub: id) on a processed split of DATA_ROOT."""
        from ..errors import CLIPEBCError
        from ..images import IMAGE_SUFFIXES
        from ..loading import load_model
        from ..runtime import select_device
        from .data import CrowdDataset
        from .evaluation import count_image, evaluate, write_nwpu_submission

        try:
            dev = select_device(device)
            net = load_model(model, map_location=str(dev))
            use_windows = net.config.is_vit if sliding_window is None else sliding_window
            if split == "test" or nwpu_submission is not None:
                images = sorted(p for p in (data_root / split / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if not images:
                    raise click.UsageError(f"no images under {data_root / split / 'images'}.")
                from ..images import load_image
                from ..preprocess import to_input_tensor

                counts = {}
                with click.progressbar(images, label=f"Counting {split}", file=sys.stderr) as bar:
                    for path in bar:
                        x = to_input_tensor(load_image(path, max_pixels=None), net.config.mean, net.config.std, device=dev)[0]
                        counts[path.stem] = count_image(net, x, sliding_window=use_windows, window=window, stride=stride)
                if nwpu_submission is not None:
                    write_nwpu_submission(counts, nwpu_submission)
                    click.echo(f"wrote {len(counts)} counts to {nwpu_submission}")
                else:
                    for name, value in counts.items():
                        click.echo(f"{name} {value:.2f}")
                    click.echo(f"{len(counts)} images, {sum(counts.values()):.1f} people in total")
                return
            dataset = CrowdDataset(data_root, split, mean=net.config.mean, std=net.config.std)
            with click.progressbar(length=len(dataset), label=f"Evaluating {split}", file=sys.stderr) as bar:
                result = evaluate(net, dataset, sliding_window=use_windows, window=window, stride=stride, device=dev,
                                  progress=lambda i, n: bar.update(1))
        except CLIPEBCError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        click.echo(f"{split}: MAE {result['mae']:.2f}  RMSE {result['rmse']:.2f}  NAE {result['nae']:.4f}  "
                   f"({result['images']} images, {'sliding window' if use_windows else 'whole images'})")

    return main


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m clip_ebc.train.evaluate``."""
    _build_cli()(args=argv)


if __name__ == "__main__":
    main()

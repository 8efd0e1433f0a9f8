"""What the command's INPUTS name, found out before any model is loaded.

Files as given (images, or videos recognised by content), folders as the images and videos inside
(sorted; ``--recursive`` descends), glob patterns expanded, ``http(s)://`` URLs probed (an image is
downloaded and counted, a video or playlist is read as a stream), other stream URLs and cameras
(``/dev/videoN``) as they are. What names nothing countable becomes a :class:`Problem`, reported in
its place among the results.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import CLIPEBCError

IMAGE = "image"
VIDEO = "video"
STREAM = "stream"
URL_IMAGE = "url-image"


@dataclass(frozen=True)
class Input:
    """One countable input: ``kind`` is image, url-image, video (a file) or stream (a URL or camera)."""

    name: str
    kind: str
    path: Path | None = None

    @property
    def is_video(self) -> bool:
        return self.kind in (VIDEO, STREAM)

    @property
    def stem(self) -> str:
        """A file-name stem for outputs: the file's stem, or the URL's last path part (or host)."""
        if self.path is not None:
            return self.path.stem
        text = re.sub(r"^[a-z0-9+.-]+://", "", self.name.split("?", 1)[0], flags=re.I).rstrip("/")
        last = text.rsplit("/", 1)[-1] or text
        return re.sub(r"[^\w.-]+", "_", Path(last).stem or last) or "stream"


@dataclass(frozen=True)
class Problem:
    """An argument that names nothing countable (a missing file, an empty folder, an unmatched glob...)."""

    name: str
    message: str


def expand_inputs(items: tuple[str, ...], recursive: bool, *, probe_timeout: float = 10.0) -> list[Input | Problem]:
    """Classify and expand the INPUTS arguments, in order, without duplicates."""
    from ..images import IMAGE_SUFFIXES
    from ..video import VIDEO_SUFFIXES, is_camera, is_stream_url

    out: list[Input | Problem] = []
    seen: set[Path] = set()

    def add_file(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(_file_input(path))

    for item in items:
        path = Path(item)
        if "://" in item:
            out.append(_url_input(item, probe_timeout) if item.lower().startswith(("http://", "https://"))
                       else Input(item, STREAM) if is_stream_url(item)
                       else Problem(item, f"{item}: unsupported address; use a file path, http(s)://, rtsp://, "
                                          "rtmp:// or srt://."))
        elif is_camera(item):
            out.append(Input(item, STREAM) if os.path.exists(item) else Problem(item, f"{item}: no such camera."))
        elif path.is_dir():
            found, skipped = _scan_folder(path, recursive, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            out.extend(skipped)
            if not found and not skipped:
                out.append(Problem(item, _empty_folder_message(item, path, recursive)))
            for p in found:
                add_file(p)
        elif not path.exists() and not path.is_symlink() and glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive) if Path(m).is_file())
            if not matches:
                out.append(Problem(item, f"{item}: no files match this pattern."))
            for p in matches:
                add_file(p)
        else:
            problem = _not_a_file(path, item)
            if problem is not None:
                out.append(problem)
            else:
                add_file(path)
    return out


def without_video_support(expanded: list[Input | Problem]) -> list[Input | Problem]:
    """``expanded`` with its videos turned into problems when PyAV (the ``video`` extra) is missing, so
    that this is known before any model is loaded; images are counted all the same."""
    if not any(isinstance(x, Input) and x.is_video for x in expanded):
        return expanded
    try:
        import av  # noqa: F401
    except ImportError:
        from ..errors import missing_extra

        return [Problem(x.name, f"{x.name}: {missing_extra('video', 'reading videos, streams and cameras', 'PyAV (av)')}")
                if isinstance(x, Input) and x.is_video else x for x in expanded]
    return expanded


def _not_a_file(path: Path, name: str) -> Problem | None:
    """Why ``path`` cannot be read as a file, or None when it can be tried."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return Problem(name, f"{name} is a broken link (its target {os.readlink(path)} does not exist).")
        return Problem(name, f"{name}: no such file.")
    except OSError as e:
        return Problem(name, f"{name}: cannot read it ({e.strerror or e}).")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return Problem(name, f"{name} is {kind}, not a file; save the image or video to a file first.")
    return None


def _file_input(path: Path) -> Input | Problem:
    """An image or a video, told by content (then by suffix); an audio file is a problem."""
    from ..remote import sniff
    from ..video import is_video_file

    try:
        with path.open("rb") as f:
            head = f.read(1024)
    except OSError:
        head = b""  # unreadable: reported when it is read
    if sniff(head) == "audio":
        return Problem(str(path), f"{path} is an audio file; clip-ebc counts people in images and videos.")
    return Input(str(path), VIDEO if is_video_file(path) else IMAGE, path)


def _scan_folder(folder: Path, recursive: bool, suffixes: tuple[str, ...]) -> tuple[list[Path], list[Problem]]:
    """(media files by suffix, sorted; problems for entries with such a suffix that are not files)."""
    found, skipped = [], []
    for p in sorted(folder.glob("**/*" if recursive else "*")):
        if p.suffix.lower() not in suffixes:
            continue
        problem = _not_a_file(p, str(p))
        if problem is not None:
            skipped.append(problem)
        elif p.is_file():
            found.append(p)
    return found, skipped


def _empty_folder_message(item: str, folder: Path, recursive: bool) -> str:
    others = sorted({p.suffix.lower() for p in folder.glob("**/*" if recursive else "*") if p.is_file() and p.suffix})
    unsupported = [s for s in others if s in (".jxl", ".raw", ".cr2", ".nef", ".arw", ".dng", ".psd")]
    if unsupported:
        return (f"{item}: no images or videos clip-ebc reads; the folder holds {', '.join(unsupported)} files, which "
                "are not supported (convert them to JPEG or PNG).")
    if not recursive and any(p.is_dir() for p in folder.iterdir()):
        return f"{item}: no images or videos in this folder (use --recursive to look in sub-folders)."
    return f"{item}: no images or videos in this folder."


def _url_input(url: str, timeout: float) -> Input | Problem:
    from ..remote import probe_url, redact

    try:
        probe = probe_url(url, timeout=timeout)
    except CLIPEBCError as e:
        return Problem(url, str(e))
    from ..video import VIDEO_SUFFIXES

    suffix = Path(url.split("?", 1)[0]).suffix.lower()
    if probe.kind == "image" and suffix in VIDEO_SUFFIXES:
        return Problem(url, f"{redact(url)} should be a video ({suffix}) but serves an image "
                            f"({probe.content_type or 'image'}); check the address.")
    if probe.kind == "image":
        return Input(url, URL_IMAGE)
    if probe.kind == "video":
        return Input(url, STREAM)
    if probe.kind == "html":
        return Problem(url, f"{redact(url)} is a web page ({probe.content_type or 'text/html'}), not an image or a "
                            "video; pass the address of the image or video itself.")
    return Problem(url, f"{redact(url)} serves {probe.content_type or 'data of an unknown type'}, which is neither an "
                        "image nor a video.")


# --------------------------------------------------------------------------------------------------
# Where outputs go
# --------------------------------------------------------------------------------------------------


def heatmap_targets(target: Path | None, expanded: list[Input | Problem]) -> dict[Input, Path]:
    """Where each input's heatmap goes: ``target`` itself for a single input (.png/.jpg for an image,
    .mp4 for a video), else ``target/<stem>_heatmap.png`` (images) or ``.mp4`` (videos and streams)."""
    from ..heatmap import FORMATS

    if target is None:
        return {}
    inputs = [x for x in expanded if isinstance(x, Input)]
    suffix = target.suffix.lower()
    if suffix in (*FORMATS, *VIDEO_FORMATS) and not target.is_dir():
        if len(expanded) > 1:
            what = "images" if all(not i.is_video for i in inputs) else "inputs"
            raise click.UsageError(f"--heatmap {target} is a file name, but {len(expanded)} {what} were given; pass a "
                                   "directory.")
        if not inputs:
            return {}
        (one,) = inputs
        if one.is_video and suffix not in VIDEO_FORMATS:
            raise click.UsageError(f"--heatmap {target}: the heatmap of a video is a video; name it .mp4.")
        if not one.is_video and suffix not in FORMATS:
            raise click.UsageError(f"--heatmap {target}: heatmaps of images are written as .png or .jpg files.")
        if one.path is not None and target.resolve() == one.path.resolve():
            raise click.UsageError(f"--heatmap {target} is the input image itself; choose another file name.")
        return {one: target}
    if suffix and not target.is_dir():
        raise click.UsageError(f"--heatmap {target}: heatmaps are written as .png or .jpg files (images) or .mp4 "
                               "(videos), or into a directory.")
    return _named_in(target, inputs, inputs, lambda i: "_heatmap.mp4" if i.is_video else "_heatmap.png")


def plot_targets(target: Path | None, inputs: list[Input]) -> dict[Input, Path]:
    """Where each video's count-over-time plot goes: ``target`` itself for a single video, else
    ``target/<stem>_counts.png`` (one file per video or stream; images get no plot)."""
    from ..timeline import PLOT_FORMATS

    if target is None:
        return {}
    videos = [i for i in inputs if i.is_video]
    if not videos:
        raise click.UsageError("--plot draws counts over time, for videos, streams and cameras; no video was given.")
    if target.suffix.lower() in PLOT_FORMATS and not target.is_dir():
        if len(videos) > 1:
            raise click.UsageError(f"--plot {target} is a file name, but {len(videos)} videos were given; pass a "
                                   "directory (one <name>_counts.png per video).")
        return {videos[0]: target}
    if target.suffix and not target.is_dir():
        raise click.UsageError(f"--plot {target}: plots are written as {', '.join(PLOT_FORMATS)} files, or into a "
                               "directory.")
    return _named_in(target, videos, inputs, lambda i: "_counts.png")


VIDEO_FORMATS = (".mp4",)


def _named_in(folder: Path, chosen: list[Input], inputs: list[Input], suffix_of) -> dict[Input, Path]:
    """``folder/<stem><suffix>`` for each chosen input, with ``_2``, ``_3`` ... for repeated names; never the
    name of an input file."""
    protected = {i.path.resolve() for i in inputs if i.path is not None}
    targets, used = {}, set()
    for item in chosen:
        suffix = suffix_of(item)
        base, ext = Path(item.stem + suffix).stem, Path(suffix).suffix
        name, n = base + ext, 2
        while name in used or (folder / name).resolve() in protected:
            name, n = f"{base}_{n}{ext}", n + 1
        used.add(name)
        targets[item] = folder / name
    return targets

"""CrowdCounter and CountResult with the tiny converted models."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from clip_ebc import CLIPEBC, ConfigError, CountResult, CrowdCounter, ImageError
from clip_ebc.runtime import select_device
from clip_ebc.sliding_window import sliding_window_density
from conftest import make_scene


@pytest.fixture(scope="module")
def rn50(tiny_dirs):
    return CrowdCounter(tiny_dirs["rn50"], device="cpu", precision="float32")  # exact: the parity tests' choice


@pytest.fixture(scope="module")
def vit(tiny_dirs):
    return CrowdCounter(tiny_dirs["vit"], device="cpu", precision="float32")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    image, _ = make_scene(300, 420, 60)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(image).save(path)
    return image, path


def test_every_input_kind_gives_the_same_count(rn50, scene):
    image, path = scene
    chw = torch.from_numpy(image).permute(2, 0, 1)
    read_only = np.asarray(Image.open(path))  # how arrays usually arrive: not writeable
    assert not read_only.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "The given NumPy array is not writable"
        counts = [rn50.count(s).count for s in (path, str(path), Image.fromarray(image), image, read_only, chw,
                                                chw.float() / 255)]
    assert max(counts) - min(counts) < 1e-3
    result = rn50.count(path)
    assert isinstance(result, CountResult) and result.ok
    assert result.count == pytest.approx(float(result.density.sum(dtype=np.float64)), rel=1e-9)
    assert result.density.dtype == np.float32 and result.block_size == 8
    assert result.image_size == (300, 420)
    assert result.processed_size == (448, 640)  # short side to 448; 420 * 448/300 = 627.2 snaps to 640
    assert result.density.shape == (448 // 8, 640 // 8)
    assert result.source == str(path) and result.model_name == str(rn50.name)


def test_matches_running_the_model_directly(rn50, vit, scene):
    """The counter is the official pipeline: resize, ImageNet normalisation, whole image or 224 windows."""
    from clip_ebc.preprocess import to_input_tensor

    image, _ = scene
    x = to_input_tensor(image, rn50.config.mean, rn50.config.std, size=(640, 448))
    with torch.no_grad():
        direct = rn50.model(x).density[0, 0].numpy()
    np.testing.assert_allclose(rn50.count(image).density, direct, rtol=0, atol=1e-6)
    windows = sliding_window_density(vit.model, x, 224, 224)[0, 0].numpy()
    np.testing.assert_allclose(vit.count(image).density, windows, rtol=0, atol=1e-6)


def test_count_result_helpers(rn50, scene, tmp_path):
    image, path = scene
    result = rn50.count(path)
    full = result.density_at_image_size()
    assert full.shape == (300, 420) and full.dtype == np.float32
    assert float(full.sum()) == pytest.approx(result.count, rel=1e-5)
    d = result.to_dict()
    assert d == {"path": str(path), "count": result.count, "model": result.model_name, "width": 420, "height": 300,
                 "seconds": d["seconds"]}
    out = result.save_heatmap(tmp_path / "heat.png")
    assert Image.open(out).size == (420, 300)
    out = rn50.count(image).save_heatmap(tmp_path / "heat.jpg", side_by_side=True)  # in-memory image kept
    assert Image.open(out).size == (840, 300) and Image.open(out).format == "JPEG"
    with pytest.raises(ConfigError, match="must end in .png, .jpg or .jpeg"):
        result.save_heatmap(tmp_path / "heat.gif")
    with pytest.raises(ImageError, match="pass the same image"):
        result.save_heatmap(tmp_path / "x.png", image=image[:100])


def test_count_many_keeps_order_and_batching_does_not_change_results(rn50, vit):
    images = [make_scene(h, w, 20, seed)[0] for seed, (h, w) in enumerate([(240, 320), (480, 640), (240, 320), (500, 500)])]
    for counter in (rn50, vit):
        one = [r.count for r in counter.count_many(images, batch_size=1)]
        many = [r.count for r in counter.count_many(images, batch_size=3)]
        assert [counter.count(i).count for i in images] == pytest.approx(one, rel=1e-5)
        assert many == pytest.approx(one, rel=1e-5)


def test_count_many_skips_bad_inputs_on_request(rn50, scene, tmp_path):
    _, path = scene
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    results = list(rn50.count_many([path, bad, path], skip_errors=True))
    assert [r.ok for r in results] == [True, False, True]
    assert "is not an image file" in results[1].error and np.isnan(results[1].count)
    assert results[1].to_dict()["count"] is None and results[0].count == results[2].count
    with pytest.raises(ImageError, match="bad.jpg is not an image file"):
        list(rn50.count_many([path, bad]))
    # without skip_errors, the inputs before the bad one (in the same batch) still get their results
    got = []
    with pytest.raises(ImageError, match="bad.jpg is not an image file"):
        for result in rn50.count_many([path, path, bad, path], batch_size=8):
            got.append(result)
    assert [r.count for r in got] == [results[0].count] * 2


def test_native_size_and_small_images(rn50, vit):
    image, _ = make_scene(150, 201, 10)
    for counter in (rn50, vit):
        native = CrowdCounter(counter.model, device="cpu", resize="native")
        result = native.count(image)
        assert result.processed_size == (150, 201)
        assert result.density.shape == (19, 26)  # ceil(150/8), ceil(201/8): padded cells are dropped
        assert np.isfinite(result.count)
    explicit = CrowdCounter(rn50.model, device="cpu", resize=(256, 512)).count(image)
    assert explicit.processed_size == (256, 352)


def test_tiled_and_untiled_counts_agree(rn50):
    image, _ = make_scene(512, 768, 100, seed=3)
    untiled = CrowdCounter(rn50.model, device="cpu", resize="native", tile_size=1024, tile_margin=0)
    tiled = CrowdCounter(rn50.model, device="cpu", resize="native", tile_size=128, tile_margin=32)
    job = tiled._prepare(image, image)
    assert len(job.plan) == 24 and max(c.height * c.width for c in job.plan) <= (128 + 64) ** 2
    assert len(untiled._prepare(image, image).plan) == 1
    a, b = untiled.count(image), tiled.count(image)
    assert abs(a.count - b.count) / a.count < 0.01
    assert a.density.shape == b.density.shape


def test_tiles_of_a_12_megapixel_photo():
    """Even cores: with the default 1728-pixel tiles a 4000x3000 photo (padded to 3008 rows) is 6 crops of
    at most 1536x1408 pixels in 3 shapes covering 1.054 times the image; with 1024-pixel tiles 12 crops of
    at most 1056x1056 in 4 shapes, 1.093 times (the old fixed-size plan: 1.19 in 9 shapes)."""
    from clip_ebc.counter import DEFAULT_TILE_SIZE
    from clip_ebc.tiling import tile_plan

    for tile, crops, shapes, largest, cover in [(DEFAULT_TILE_SIZE, 6, 3, 1536 * 1408, 1.054), (1024, 12, 4, 1056**2, 1.093)]:
        plan = tile_plan(3008, 4000, tile, 32, 8)
        assert len(plan) == crops and len({(c.height, c.width) for c in plan}) == shapes
        assert max(c.height * c.width for c in plan) == largest
        assert sum(c.height * c.width for c in plan) / (3008 * 4000) == pytest.approx(cover, abs=5e-4)
        cells = torch.zeros(3008 // 8, 4000 // 8)
        for c in plan:  # every cell of the image is kept from exactly one crop
            cells[c.place] += 1
        assert bool((cells == 1).all())


def test_resnets_run_images_up_to_3_2_megapixels_whole(rn50):
    """As the official code does (the same numbers); larger ones are tiled (the old 1.2 MP bound is gone)."""
    counter = CrowdCounter(rn50.model, device="cpu", resize="native")
    for (height, width), crops in [((1536, 2048), 1), ((1792, 1792), 1), ((1824, 1792), 4), ((1088, 1088), 1)]:
        job = counter._prepare("x", np.zeros((height, width, 3), np.uint8))
        assert len(job.plan) == crops, (height, width)
        assert max(c.height * c.width for c in job.plan) <= 1792**2


def test_model_instance_and_repr(converted_rn50):
    counter = CrowdCounter(converted_rn50, device="cpu")
    assert counter.name == "custom" and "RN50" in repr(counter)
    assert isinstance(counter.model, CLIPEBC) and not counter.model.training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resize="big"), "resize must be 'dataset', 'native'"),
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(tile_size=100), "multiples of 32"),
    ],
)
def test_bad_settings(converted_rn50, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CrowdCounter(converted_rn50, device="cpu", **kwargs)


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="CUDA is not available here; use --device cpu"):
            select_device("cuda")
    with pytest.raises(ConfigError, match="'gpu0' is not a device"):
        select_device("gpu0")
    with pytest.raises(ConfigError, match="'meta' is not a device clip-ebc runs on"):
        select_device("meta")
    if not torch.cuda.is_available():  # a torch.device object is checked like its name
        with pytest.raises(ConfigError, match="'cuda:1' was requested, but CUDA is not available here"):
            select_device(torch.device("cuda:1"))


def test_matplotlib_is_imported_only_for_heatmaps(tiny_dirs, scene, tmp_path):
    _, path = scene
    code = (
        "import sys\n"
        "from clip_ebc import CrowdCounter\n"
        f"r = CrowdCounter({str(tiny_dirs['rn50'])!r}, device='cpu').count({str(path)!r})\n"
        "print('matplotlib' in sys.modules)\n"
        f"r.save_heatmap({str(tmp_path / 'h.png')!r})\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.split() == ["False", "True"]


def test_extreme_aspect_ratio_is_refused_before_allocating(rn50):
    thin = np.full((1, 5000, 3), 128, np.uint8)  # the resize rule would make it 448 x 2,240,000
    with pytest.raises(ImageError, match=r"would be resized to 2240000x448 .* more than the limit"):
        rn50.count(thin)
    good, _ = make_scene(240, 320, 5)
    results = list(rn50.count_many([thin, good], skip_errors=True))
    assert [r.ok for r in results] == [False, True]
    assert CrowdCounter(rn50.model, device="cpu", resize="native").count(thin).density.shape == (1, 625)


def test_lazily_opened_truncated_pil_image(rn50, tmp_path):
    image, _ = make_scene(200, 200, 5)
    Image.fromarray(image).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    results = list(rn50.count_many([Image.open(tmp_path / "cut.jpg"), tmp_path / "full.jpg"], skip_errors=True))
    assert not results[0].ok and "cannot be decoded" in results[0].error and results[1].ok


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resize=(0, None)), "multiples of 32 with 32 <= min_side <= max_side"),
        (dict(resize=(512, 256)), "multiples of 32 with 32 <= min_side <= max_side"),
        (dict(resize=(450, None)), "multiples of 32"),
    ],
)
def test_bad_resize_settings(converted_rn50, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CrowdCounter(converted_rn50, device="cpu", **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=232), "window must be a positive multiple of 16"),
        (dict(window=0), "window must be a positive multiple of 16"),
        (dict(stride=100), "stride must be a multiple of the block size 8"),
        (dict(stride=240), "stride must be a multiple of the block size 8 between 8 and the window"),
    ],
)
def test_bad_window_settings(converted_vit, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CrowdCounter(converted_vit, device="cpu", **kwargs)


def test_count_many_rejects_a_bad_batch_size(rn50):
    with pytest.raises(ConfigError, match="batch_size must be at least 1, got -1"):
        list(rn50.count_many([np.zeros((64, 64, 3), np.uint8)], batch_size=-1))


def test_native_partial_cells_map_back_onto_the_image(rn50):
    image, _ = make_scene(150, 201, 10)
    result = CrowdCounter(rn50.model, device="cpu", resize="native").count(image)
    assert result.grid_extent() == (152.0, 208.0)  # 19 and 26 cells of 8 pixels reach past the edge
    full = result.density_at_image_size()
    assert full.shape == (150, 201) and float(full.sum()) == pytest.approx(result.count, rel=1e-5)


def test_checkpoint_folder_named_like_json(converted_rn50, tmp_path, monkeypatch):
    converted_rn50.save_pretrained(tmp_path / "{proj}")
    monkeypatch.chdir(tmp_path)
    assert CrowdCounter("{proj}", device="cpu").config.backbone == "RN50"


def test_batches_stay_within_the_pixel_budget(rn50, vit, monkeypatch):
    """ResNets: one tile's worth of pixels per forward pass; ViTs: batch_size windows."""
    import clip_ebc.counter as counter_module

    seen = []
    real = counter_module.run_plans
    monkeypatch.setattr(counter_module, "run_plans", lambda *a, **k: (seen.append(k["max_batch_pixels"]), real(*a, **k))[1])
    image, _ = make_scene(480, 640, 10)
    CrowdCounter(rn50.model, device="cpu", batch_size=8).count(image)
    CrowdCounter(vit.model, device="cpu", batch_size=8).count(image)
    list(CrowdCounter(vit.model, device="cpu").count_many([image], batch_size=3))
    assert seen == [(1728 + 64) ** 2, 8 * 224**2, 3 * 224**2]


def test_images_are_grouped_by_pixels_too(rn50, monkeypatch):
    import clip_ebc.counter as counter_module

    monkeypatch.setattr(counter_module, "CHUNK_PIXELS", 100_000)
    groups = []
    real = rn50._count_chunk
    monkeypatch.setattr(rn50, "_count_chunk", lambda items, *a: (groups.append(len(items)), real(items, *a))[1])
    images = [make_scene(240, 320, 3, seed)[0] for seed in range(3)]  # 76,800 pixels each
    results = list(rn50.count_many(images, batch_size=8))
    assert groups == [1, 1, 1] and len(results) == 3


def test_kept_images_spare_a_second_decode(rn50, scene, tmp_path, monkeypatch):
    _, path = scene
    (kept,) = rn50.count_many([path], keep_images=True)
    import clip_ebc.images as images_module

    monkeypatch.setattr(images_module.Image, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read again")))
    assert kept.save_heatmap(tmp_path / "h.png").is_file()

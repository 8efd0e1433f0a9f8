"""Dataset readers on tiny files in each dataset's real format, prepare, and the training dataset."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from clip_ebc.errors import ConfigError
from clip_ebc.train.data import CrowdDataset, DatasetError, collate_crops, prepare_dataset, read_dataset
from clip_ebc.train.transforms import Augmentation, TrainTransform


def jpg(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def pts(n, width, height, seed=0):
    return np.random.default_rng(seed).uniform(0, [width, height], size=(n, 2))


def shanghaitech(root, part, sizes):
    for folder, counts in sizes.items():
        for k, n in enumerate(counts, start=1):
            jpg(root / f"part_{part}" / folder / "images" / f"IMG_{k}.jpg", 300, 200, seed=k)
            gt = root / f"part_{part}" / folder / "ground-truth" / f"GT_IMG_{k}.mat"
            gt.parent.mkdir(parents=True, exist_ok=True)
            info = np.empty((1, 1), dtype=object)
            # the 'number' field is stored with varying dtypes in the real files; the reader uses 'location'
            info[0, 0] = np.array([(pts(n, 300, 200, k), np.array([[n]], dtype=np.uint16 if k % 2 else np.float64))],
                                  dtype=[("location", object), ("number", object)])
            savemat(gt, {"image_info": info})


def test_shanghaitech(tmp_path):
    shanghaitech(tmp_path, "A", {"train_data": [3, 0, 7], "test_data": [5]})
    shanghaitech(tmp_path, "B", {"train_data": [1], "test_data": [2, 4]})
    a = read_dataset("sha", tmp_path, strict=False)
    assert [len(s.points) for s in a["train"]] == [3, 0, 7] and [len(s.points) for s in a["val"]] == [5]
    assert [s.name for s in a["train"]] == ["IMG_1", "IMG_2", "IMG_3"]
    b = read_dataset("shb", tmp_path / "part_B", strict=False)  # the part folder itself works too
    assert [len(s.points) for s in b["val"]] == [2, 4]
    with pytest.raises(DatasetError, match=r"sha train split: expected 300 images, found 3 under"):
        read_dataset("sha", tmp_path)


def test_qnrf(tmp_path):
    for split, counts in (("Train", [4, 9]), ("Test", [1])):
        for k, n in enumerate(counts, start=1):
            jpg(tmp_path / split / f"img_{k:04d}.jpg", 120, 80, seed=k)
            savemat(tmp_path / split / f"img_{k:04d}_ann.mat", {"annPoints": pts(n, 120, 80, k)})
    splits = read_dataset("qnrf", tmp_path, strict=False)
    assert [len(s.points) for s in splits["train"]] == [4, 9] and len(splits["val"][0].points) == 1
    (tmp_path / "Test" / "img_0001_ann.mat").unlink()
    with pytest.raises(DatasetError, match="qnrf val split: img_0001.jpg has no annotation img_0001_ann.mat"):
        read_dataset("qnrf", tmp_path, strict=False)


def nwpu(root, with_test_images=True):
    layout = {"train": [("0001", 6), ("1002", 2)], "val": [("3101", 3)], "test": [("3610", None), ("5109", None)]}
    for split, items in layout.items():
        (root / f"{split}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.txt").write_text("\n".join(f"{i} 1 2" for i, _ in items) + "\n")
        for id_, n in items:
            part = min(5, (int(id_) - 1) // 1000 + 1)
            if split != "test" or with_test_images:
                jpg(root / f"images_part{part}" / f"{id_}.jpg", 100, 60, seed=int(id_))
            if n is not None:
                (root / "mats").mkdir(exist_ok=True)
                savemat(root / "mats" / f"{id_}.mat", {"annPoints": pts(n, 100, 60, int(id_))})


def test_nwpu(tmp_path):
    nwpu(tmp_path)
    splits = read_dataset("nwpu", tmp_path, strict=False)
    assert [len(s.points) for s in splits["train"]] == [6, 2] and [s.name for s in splits["test"]] == ["3610", "5109"]
    assert splits["train"][1].image.parent.name == "images_part2" and splits["test"][1].image.parent.name == "images_part5"
    assert all(s.points is None for s in splits["test"])
    missing = tmp_path / "missing"
    nwpu(missing, with_test_images=False)
    (missing / "test.txt").write_text("\n".join(f"{3610 + i} 1 2" for i in range(1500)))
    with pytest.raises(DatasetError, match=r"nwpu test split: expected 1500 images, found 0 under .*images_part\*"):
        read_dataset("nwpu", missing, strict=True)


def test_jhu(tmp_path):
    for split, items in (("train", [("0001", 3)]), ("val", [("0002", 2)]), ("test", [("0003", 5), ("0004", 0)])):
        lines = []
        for name, n in items:
            jpg(tmp_path / split / "images" / f"{name}.jpg", 90, 70)
            gt = tmp_path / split / "gt" / f"{name}.txt"
            gt.parent.mkdir(parents=True, exist_ok=True)
            gt.write_text("".join(f"{x:.1f} {y:.1f} 10 12 1 0\n" for x, y in pts(n, 90, 70)))
            lines.append(f"{name},{n},1,0,1")
        (tmp_path / split / "image_labels.txt").write_text("\n".join(lines) + "\n")
    splits = read_dataset("jhu", tmp_path, strict=False)
    assert [len(s.points) for s in splits["train"]] == [3, 2]  # train and val merged
    assert [len(s.points) for s in splits["val"]] == [5, 0]   # test becomes val


def test_custom_folder_with_json_and_csv(tmp_path):
    jpg(tmp_path / "a.jpg", 64, 64)
    (tmp_path / "a.json").write_text(json.dumps({"points": [[1, 2], [3, 4]]}))
    jpg(tmp_path / "b.jpg", 64, 64, seed=1)
    (tmp_path / "b.csv").write_text("x,y\n5,6\n7,8\n9,10\n")
    jpg(tmp_path / "c.jpg", 64, 64, seed=2)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "c.json").write_text(json.dumps([{"x": 1, "y": 1}]))
    splits = read_dataset("custom", tmp_path, val_fraction=0.34)
    counts = {s.name: len(s.points) for split in splits.values() for s in split}
    assert counts == {"a": 2, "b": 3, "c": 1} and len(splits["val"]) == 1
    jpg(tmp_path / "d.jpg", 64, 64)
    with pytest.raises(DatasetError, match="d.jpg has no d.json or d.csv"):
        read_dataset("custom", tmp_path)


def test_prepare_writes_the_official_layout(tmp_path):
    shanghaitech(tmp_path / "src", "A", {"train_data": [3, 5], "test_data": [2]})
    written = prepare_dataset("sha", tmp_path / "src", tmp_path / "dst", strict=False)
    assert written == {"train": 2, "val": 1}
    assert sorted(p.name for p in (tmp_path / "dst" / "train" / "images").iterdir()) == ["1.jpg", "2.jpg"]
    with Image.open(tmp_path / "dst" / "train" / "images" / "1.jpg") as img:
        assert img.size == (672, 448)  # 300x200 -> shorter side 448, longer 672 (multiples of 32)
    labels = np.load(tmp_path / "dst" / "train" / "labels" / "1.npy")
    original = read_dataset("sha", tmp_path / "src", strict=False)["train"][0].points
    np.testing.assert_allclose(labels, original * [672 / 300, 448 / 200])
    assert labels.dtype == np.float64 and labels.shape == (3, 2)
    nwpu(tmp_path / "nwpu")
    prepare_dataset("nwpu", tmp_path / "nwpu", tmp_path / "nwpu-dst", strict=False)
    assert sorted(p.name for p in (tmp_path / "nwpu-dst" / "test" / "images").iterdir()) == ["3610.jpg", "5109.jpg"]
    assert not (tmp_path / "nwpu-dst" / "test" / "labels").exists()
    with Image.open(tmp_path / "nwpu-dst" / "val" / "images" / "1.jpg") as img:
        assert img.size == (736, 448)  # 100x60: 100 * 448/60 = 746.7 -> 736


@pytest.mark.parametrize("sides, message", [(dict(max_side=1000), "max_side must be a positive multiple of 32.*got 1000"),
                                            (dict(min_side=0), "min_side must be a positive multiple of 32.*got 0"),
                                            (dict(min_side=512, max_side=448), r"max_side \(448\) must not be smaller")])
def test_prepare_checks_the_side_limits(tmp_path, sides, message):
    shanghaitech(tmp_path / "src", "A", {"train_data": [3], "test_data": [2]})
    with pytest.raises(ConfigError, match=message):
        prepare_dataset("sha", tmp_path / "src", tmp_path / "dst", strict=False, **sides)
    assert not (tmp_path / "dst").exists()  # checked before anything is read or written


def test_crowd_dataset_items(tmp_path):
    shanghaitech(tmp_path / "src", "A", {"train_data": [6, 2], "test_data": [3]})
    prepare_dataset("sha", tmp_path / "src", tmp_path / "dst", strict=False)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    val = CrowdDataset(tmp_path / "dst", "val", mean=mean, std=std)
    image, points = val[0]
    assert image.shape == (3, 448, 672) and points.shape == (3, 2)
    train = CrowdDataset(tmp_path / "dst", "train", mean=mean, std=std, num_crops=2, block_size=8,
                         transform=TrainTransform(Augmentation(input_size=64)))
    images, crop_points, counts = train[0]
    assert images.shape == (2, 3, 64, 64) and counts.shape == (2, 1, 8, 8) and len(crop_points) == 2
    for p, c in zip(crop_points, counts):
        assert c.sum() <= len(p)  # points sharing a pixel count once
    again = train[0]
    assert torch.equal(images, again[0])
    train.set_epoch(1)
    assert not torch.equal(images, train[0][0])  # another epoch, other crops
    batch = collate_crops([train[0], train[1]])
    assert batch[0].shape == (4, 3, 64, 64) and len(batch[1]) == 4 and batch[2].shape == (4, 1, 8, 8)
    with pytest.raises(DatasetError, match="prepare the data with python -m clip_ebc.train.prepare"):
        CrowdDataset(tmp_path / "nothing", "train", mean=mean, std=std)

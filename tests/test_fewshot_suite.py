"""The paper's few-shot suite (vitlib.evals.suite) against independent references: big_vision's
config for the splits, PIL decoding for the features, a simulated two-host all-gather.
(big_vision's fixed-l2 probe itself is tested in test_fewshot.py.)"""
import io
import threading

import numpy as np
import pytest
from PIL import Image


pytest.importorskip("vitlib.data.image_ops")  # written in parallel; these tests need it
from vitlib.evals import suite  # noqa: E402


# ---------------------------------------------------------------------------- the suite spec
def test_paper_suite_is_big_vision_splits():
    # big_vision/configs/common_fewshot.py ('imagenet' commented out there: manual download);
    # caltech_birds2011 is not in that file: TFDS train / test.
    assert suite.PAPER_SUITE == (("imagenet2012", "train[:65000]", "validation"),
                                 ("cifar100", "train", "test"),
                                 ("oxford_iiit_pet", "train", "test"),
                                 ("caltech_birds2011", "train", "test"))
    entries = suite.parse_suite(["paper"])
    assert [tuple(e)[1:] for e in entries] == list(suite.PAPER_SUITE)
    assert [e.label for e in entries] == ["imagenet2012", "cifar100", "oxford_iiit_pet",
                                          "caltech_birds2011"]


@pytest.mark.parametrize("spec, expected", [
    ("cifar100", ("cifar100", "cifar100", "train", "test")),
    ("imagenet2012", ("imagenet2012", "imagenet2012", "train[:65000]", "validation")),
    ("uc_merced", ("uc_merced", "uc_merced", "train[:1000]", "train[1000:]")),
    ("mine", ("mine", "mine", "train", "test")),
    ("cifar100:3.0.2", ("cifar100_3_0_2", "cifar100:3.0.2", "train", "test")),
    ("imagenet2012:train[:65000]:validation",
     ("imagenet2012", "imagenet2012", "train[:65000]", "validation")),
    ("ds/cfg:1.2.0:train[10%:]:train[:10%]",
     ("ds_cfg_1_2_0", "ds/cfg:1.2.0", "train[10%:]", "train[:10%]")),
    ("mini=cifar100:train[:45000]:train[45000:]",
     ("mini", "cifar100", "train[:45000]", "train[45000:]")),
])
def test_parse_entry(spec, expected):
    assert tuple(suite.parse_suite([spec])[0]) == expected


@pytest.mark.parametrize("spec, match", [
    ("", "entry ''"),
    ("cifar100:train", "'cifar100:train' has 1 split field"),
    ("cifar100:a:b:c", "3 split field"),
    ("bad name", "dataset name 'bad name'"),
    ("cifar100:train[:5:test", "'cifar100:train\\[:5:test' has unbalanced"),
    ("cifar100:train[:5]]:test", "unbalanced"),
    ("cifar100:train!:test", "train_split 'train!'"),
    ("cifar100:train:", "eval_split ''"),
    ("x y=cifar100", "label 'x y'"),
    ("p=paper", "'paper' stands for four"),
    (3, "entry 3"),
])
def test_parse_errors_name_field_and_value(spec, match):
    with pytest.raises(ValueError, match="fewshot.suite") as err:
        suite.parse_suite([spec])
    assert err.match(match)


def test_parse_suite_refuses_duplicate_labels_and_non_lists():
    with pytest.raises(ValueError, match="fewshot_cifar100_\\*"):
        suite.parse_suite(["cifar100", "cifar100:train[:100]:test"])
    with pytest.raises(ValueError, match="fewshot.suite: 5"):
        suite.parse_suite(5)
    assert suite.parse_suite("cifar100") == suite.parse_suite(["cifar100"])


# -------------------------------------------------------------------------------- features
@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two small JPEG datasets: 'shapes_a' (5 classes) and 'shapes_b' (4 classes), images of
    varied non-square sizes; class = colour and pattern."""
    from jpeg_datasets import make_image_folder, prepare_folder_dataset

    root = tmp_path_factory.mktemp("fewshot_suite")
    data_dir = root / "tfds"
    make_image_folder(root / "a", classes=5, per_class=12, sizes=(20, 48), seed=0,
                      split_sizes={"train": 12, "test": 8})
    make_image_folder(root / "b", classes=4, per_class=10, sizes=(16, 40), seed=1,
                      split_sizes={"train": 10, "test": 8})
    prepare_folder_dataset(root / "a", data_dir, "shapes_a")
    prepare_folder_dataset(root / "b", data_dir, "shapes_b")
    return str(data_dir)


def _pil_decode(data: bytes, need: float) -> Image.Image:
    """PIL decoding at the documented DCT scale: 1/s with s the largest of 8, 4, 2 <= ``need``
    (original pixels per output pixel), else full size."""
    image = Image.open(io.BytesIO(data))
    s = next((s for s in (8, 4, 2) if s <= need + 1e-9), 1)
    if s > 1:
        image.draft(None, (image.size[0] // s, image.size[1] // s))
    return image.convert("RGB")


def _pil_resize_crop(data: bytes, size: int) -> np.ndarray:
    """The documented eval preprocessing with PIL alone: the smaller side resized to
    round(size * 256 / 224) (other side float32-rounded; BOX filter when shrinking, BILINEAR
    when not), then the centre ``size`` square at offsets (H - size) // 2."""
    resize = round(size * 256 / 224)
    w, h = Image.open(io.BytesIO(data)).size
    image = _pil_decode(data, min(w, h) / resize)
    w, h = image.size
    f = np.float32(resize) / np.float32(min(w, h))
    nw, nh = int(np.rint(np.float32(w) * f)), int(np.rint(np.float32(h) * f))
    a = np.asarray(image.resize((nw, nh), Image.BOX if (h > nh and w > nw) else Image.BILINEAR))
    dy, dx = (nh - size) // 2, (nw - size) // 2
    return a[dy:dy + size, dx:dx + size]


def _pil_resize(data: bytes, size: int) -> np.ndarray:
    """A square bilinear resize of the whole image (decoded at the documented DCT scale)."""
    w, h = Image.open(io.BytesIO(data)).size
    image = _pil_decode(data, min(w, h) / size)
    return np.asarray(image if image.size == (size, size)
                      else image.resize((size, size), Image.BILINEAR))


def _pil_bigvision(data: bytes, size: int) -> np.ndarray:
    """big_vision's resize(256)|central_crop(224) geometry at ``size``: a square resize to
    round(size * 256 / 224), then the centre crop offset by (resized - size) // 2."""
    resized = round(size * 256 / 224)
    a = _pil_resize(data, resized)
    o = (resized - size) // 2
    return a[o:o + size, o:o + size]


def _colour_features(batch):
    """Mean and max of each channel: a known function of the pixels [-1, 1]."""
    batch = np.asarray(batch, np.float64)
    return np.concatenate([batch.mean(axis=(1, 2)), batch.max(axis=(1, 2))], axis=1)


def _reference(source, make):
    """(uint8 images, colour features, labels) of every record, decoded one by one."""
    images = np.stack([make(source[i]["image"]) for i in range(len(source))])
    x = images.astype(np.float64) / 127.5 - 1.0
    return (images, np.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=1),
            np.array([source[i]["label"] for i in range(len(source))]))


class _Counting:
    """A source wrapper counting records read."""

    def __init__(self, source):
        self.inner, self.reads = source, 0
        for key in ("name", "split", "data_dir", "num_classes", "class_names", "multi_label",
                    "label_key"):
            setattr(self, key, getattr(source, key))

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.reads += 1
        return self.inner[i]

    def __getitems__(self, indices):
        self.reads += len(indices)
        return self.inner.__getitems__(indices)


@pytest.mark.parametrize("preprocess, make", [
    ("resize_crop", _pil_resize_crop), ("resize", _pil_resize), ("bigvision", _pil_bigvision)])
def test_extract_features_equal_direct_pil_decoding(datasets, preprocess, make):
    from vitlib.data import sources

    source = sources.open_source("shapes_a", "train", datasets)  # 60 records
    batches = []

    def features_fn(batch):
        batches.append(batch.copy())
        return _colour_features(batch)
    features, labels = suite.extract_features(features_fn, source, 16, 8, preprocess,
                                              threads=3)
    images, expected, expected_labels = _reference(source, lambda d: make(d, 16))
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-6)  # float32 [-1, 1]
    np.testing.assert_array_equal(labels, expected_labels)
    # The pixels themselves, exactly: batch b holds records 8b .. 8b+7, the last one repeated.
    pixels = np.round((np.concatenate(batches) + 1.0) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(pixels, images[np.minimum(np.arange(64), 59)])
    # Fixed-size batches, the last padded with the last record.
    assert len(batches) == 8 and all(b.shape == (8, 16, 16, 3) for b in batches)
    assert all(b.dtype == np.float32 for b in batches)
    last = batches[-1]
    assert all(np.array_equal(last[j], last[3]) for j in range(4, 8))
    assert features.shape == (60, 6)


def test_two_processes_reassemble_the_single_process_result(datasets):
    from vitlib.data import sources

    source = sources.open_source("shapes_b", "test", datasets)  # 32 records
    single, single_labels = suite.extract_features(_colour_features, source, 12, 6)
    barrier, slots, results, local_shapes = threading.Barrier(2), {}, {}, []

    def host(p):
        def features_fn(local):  # a simulated all-gather of both hosts' rows
            local_shapes.append(local.shape)
            slots[p] = local
            barrier.wait()
            global_batch = np.concatenate([slots[0], slots[1]])
            barrier.wait()
            return _colour_features(global_batch)
        results[p] = suite.extract_features(features_fn, source, 12, 6, process_index=p,
                                            process_count=2, threads=2)
    threads = [threading.Thread(target=host, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert set(local_shapes) == {(3, 12, 12, 3)}
    for p in (0, 1):
        np.testing.assert_array_equal(results[p][0], single)
        np.testing.assert_array_equal(results[p][1], single_labels)
    with pytest.raises(ValueError, match="batch_size: 7 is not divisible"):
        suite.extract_features(_colour_features, source, 12, 7, process_count=2)


def test_image_cache_skips_decoding_within_its_budget(datasets):
    from vitlib.data import sources

    source = _Counting(sources.open_source("shapes_a", "test", datasets))  # 40 records
    cache = suite.ImageCache(max_bytes=10**6)
    first = suite.extract_features(_colour_features, source, 16, 16, cache=cache)
    reads = source.reads
    again = suite.extract_features(lambda b: _colour_features(b) * 2, source, 16, 16,
                                   cache=cache)
    assert source.reads == reads  # nothing read or decoded again
    np.testing.assert_allclose(again[0], 2 * first[0])
    np.testing.assert_array_equal(again[1], first[1])
    assert cache.used_bytes == 3 * 16 * 16 * 16 * 3  # 3 batches of 16 rows
    small = suite.ImageCache(max_bytes=1000)
    suite.extract_features(_colour_features, source, 16, 16, cache=small, progress=True)
    reads = source.reads
    suite.extract_features(_colour_features, source, 16, 16, cache=small)
    assert small.used_bytes == 0 and source.reads > reads


def test_run_suite_on_two_jpeg_datasets(datasets):
    record = suite.run_suite(_colour_features, ["shapes_a", "b=shapes_b:train:test"], 16,
                             datasets, shots=(1, 5), seeds=(0, 1, 2), batch_size=16)
    assert set(record) == {f"fewshot_{d}_{k}shot{s}" for d in ("shapes_a", "b")
                           for k in (1, 5) for s in ("", "_std")}
    assert record["fewshot_shapes_a_5shot"] >= 0.8 and record["fewshot_b_5shot"] >= 0.8
    assert all(0 <= v <= 1 for v in record.values())
    fixed = suite.run_suite(_colour_features, ["shapes_a:1.0.0"], 16, datasets, shots=(5,),
                            seeds=(0, 1), l2_mode="fixed", fixed_l2=1.0, batch_size=16)
    assert set(fixed) == {"fewshot_shapes_a_1_0_0_5shot", "fewshot_shapes_a_1_0_0_5shot_std"}
    assert fixed["fewshot_shapes_a_1_0_0_5shot"] >= 0.8


def test_run_suite_errors_before_extracting(datasets):
    from vitlib.data.datasets import DataError

    calls = []

    def features_fn(batch):
        calls.append(1)
        return _colour_features(batch)
    with pytest.raises(DataError, match="'shapes_a'.*class 0 .*'class_00'.* 12 train examples, "
                                        "fewer than 25"):
        suite.run_suite(features_fn, ["shapes_a"], 16, datasets, shots=(5, 25), batch_size=16)
    calls.clear()
    with pytest.raises(ValueError, match="fewshot.l2"):
        suite.run_suite(features_fn, ["shapes_a"], 16, datasets, l2_mode="bv")
    with pytest.raises(DataError, match="split"):
        suite.run_suite(features_fn, ["shapes_a", "shapes_b:train:nope"], 16, datasets)
    with pytest.raises(ValueError, match="fewshot preprocess"):
        suite.run_suite(features_fn, ["shapes_a"], 16, datasets, preprocess="crop")
    assert not calls


def test_multi_label_datasets_are_refused(datasets, monkeypatch):
    from vitlib.data import sources
    from vitlib.data.datasets import DataError

    real = sources.open_source

    def multi(*args, **kwargs):
        source = real(*args, **kwargs)
        source.multi_label = True
        return source
    monkeypatch.setattr(sources, "open_source", multi)
    with pytest.raises(DataError, match="'shapes_a' is multi-label.*one label per example"):
        suite.run_suite(_colour_features, ["shapes_a"], 16, datasets)
    with pytest.raises(DataError, match="multi-label"):
        suite.extract_features(_colour_features, multi("shapes_a", "train", datasets), 16, 8)

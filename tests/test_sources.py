"""vitlib.data.sources: encoded bytes, labels and TFDS split slices of a generated JPEG dataset
against the image files themselves; pickling into a fresh process; errors; tfds mock_data."""
import io
import json
import multiprocessing
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from jpeg_datasets import class_name, make_image_folder, prepare_folder_dataset
from PIL import Image

from vitlib.data import sources
from vitlib.data.datasets import DataError

CLASSES, PER_CLASS = 3, 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    folder = make_image_folder(root / "images", classes=CLASSES, per_class=PER_CLASS,
                               splits=("train", "test"), sizes=(20, 120), png=2, seed=3)
    data_dir, name = prepare_folder_dataset(folder, root / "tfds", "shapes",
                                            on_bad_image="fail")
    return folder, str(data_dir), name


def _expected(folder, split):
    """(path, label) in the documented record order: class folders sorted, then file names."""
    out = []
    for c in range(CLASSES):
        for path in sorted((Path(folder) / split / class_name(c)).iterdir()):
            out.append((path, c))
    return out


def test_records_are_the_files_bytes_and_folder_labels_in_sorted_order(data):
    folder, data_dir, name = data
    source = sources.open_source(name, "train", data_dir)
    expected = _expected(folder, "train")
    assert len(source) == len(expected) == CLASSES * PER_CLASS
    assert source.num_classes == CLASSES and not source.multi_label
    assert source.class_names == [class_name(c) for c in range(CLASSES)]
    assert (source.image_key, source.label_key, source.split) == ("image", "label", "train")
    records = source.__getitems__(list(range(len(source))))
    for i, ((path, label), record) in enumerate(zip(expected, records)):
        assert record["label"] == label and isinstance(record["label"], int)
        assert isinstance(record["image"], bytes)
        assert source[i]["image"] == record["image"]
        if path.suffix == ".jpg":
            assert record["image"] == path.read_bytes(), path
        else:  # the PNGs were re-encoded as JPEG, quality 95 (as documented)
            assert record["image"][:3] == b"\xff\xd8\xff"
            original = Image.open(path).convert("RGB")
            reference = io.BytesIO()
            original.save(reference, format="JPEG", quality=95)
            assert record["image"] == reference.getvalue()
            assert Image.open(io.BytesIO(record["image"])).size == original.size
    assert sum(p.suffix == ".png" for p, _ in expected) == 2
    assert source[-1]["image"] == records[-1]["image"]
    with pytest.raises(IndexError, match="out of range"):
        source[len(source)]


@pytest.mark.parametrize("split, select", [
    ("train[:7]", lambda tr, te: tr[:7]),
    ("train[5:11]", lambda tr, te: tr[5:11]),
    ("train[-4:]", lambda tr, te: tr[-4:]),
    ("train[:25%]", lambda tr, te: tr[:9]),          # 25% of 36
    ("train[50%:]", lambda tr, te: tr[18:]),
    ("test+train[:3]", lambda tr, te: te + tr[:3]),
])
def test_split_slices_select_the_python_slices_of_the_whole_split(data, split, select):
    folder, data_dir, name = data
    train = [p.name + str(c) for p, c in _expected(folder, "train")]
    test = [p.name + str(c) for p, c in _expected(folder, "test")]
    whole = {"train": sources.open_source(name, "train", data_dir),
             "test": sources.open_source(name, "test", data_dir)}
    images = {s: [r["image"] for r in src.__getitems__(list(range(len(src))))]
              for s, src in whole.items()}
    sliced = sources.open_source(name, split, data_dir)
    got = [r["image"] for r in sliced.__getitems__(list(range(len(sliced))))]
    want = select(images["train"], images["test"])
    assert len(got) == len(select(train, test))
    assert got == want


def _read_in_child(source, indices, queue):
    queue.put([(r["image"], r["label"]) for r in source.__getitems__(indices)])


def test_a_pickled_source_reads_the_same_records_in_a_fresh_process(data):
    folder, data_dir, name = data
    source = sources.open_source(name, "train[3:20]", data_dir)
    source[0]  # opened here: the open TFDS source must not travel
    state = pickle.dumps(source)
    assert len(state) < 2000
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(source, [0, 5, 16], queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert got == [(source[i]["image"], source[i]["label"]) for i in (0, 5, 16)]
    assert pickle.loads(state)[5]["image"] == source[5]["image"]


def test_data_dir_defaults_to_TFDS_DATA_DIR(data, monkeypatch):
    folder, data_dir, name = data
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    assert len(sources.open_source(name, "test")) == CLASSES * PER_CLASS
    assert len(sources.open_source(f"{name}:1.0.0", "test")) == CLASSES * PER_CLASS


def test_a_missing_dataset_names_the_data_dir_what_it_holds_and_how_to_prepare(data, tmp_path):
    folder, data_dir, name = data
    with pytest.raises(DataError) as err:
        sources.open_source("no_such_set", "train", data_dir)
    message = str(err.value)
    assert data_dir in message and "'shapes'" in message
    assert "python -m vitlib.data.prepare" in message and "--file_format=array_record" in message
    with pytest.raises(DataError, match=f"not prepared in {tmp_path}.*no prepared datasets"):
        sources.open_source("cifar100", "train", str(tmp_path))  # a TFDS name, not prepared
    with pytest.raises(DataError, match="not allowed"):
        sources.open_source("bad name!", "train", data_dir)


@pytest.mark.parametrize("split", ["validation", "train+val[:5]", "train[:200%]", "train[9:9]"])
def test_a_bad_split_names_the_splits_that_exist(data, split):
    folder, data_dir, name = data
    with pytest.raises(DataError, match=r"split.*\['test', 'train'\]|test.*train"):
        sources.open_source(name, split, data_dir)


def test_a_bad_label_key_names_the_allowed_keys(data):
    folder, data_dir, name = data
    with pytest.raises(DataError, match=r"label_key: 'fine_label'.*\['label'\]"):
        sources.open_source(name, "train", data_dir, label_key="fine_label")


def _copy(data_dir, tmp_path, name):
    target = tmp_path / "tfds"
    shutil.copytree(Path(data_dir) / name, target / name)
    return target, target / name / "1.0.0"


def test_a_tfrecord_dataset_says_so_and_how_to_convert(data, tmp_path):
    folder, data_dir, name = data
    target, version_dir = _copy(data_dir, tmp_path, name)
    info = json.loads((version_dir / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (version_dir / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="tfrecord.*convert_format.*array_record"):
        sources.open_source(name, "train", str(target))


def test_a_label_outside_the_classes_names_the_index_and_label(data, tmp_path):
    folder, data_dir, name = data
    target, version_dir = _copy(data_dir, tmp_path, name)
    # Claim two classes while the records hold labels 0, 1, 2.
    (version_dir / "label.labels.txt").write_text("class_00\nclass_01\n")
    features = json.loads((version_dir / "features.json").read_text())
    text = json.dumps(features)
    assert '"numClasses": "3"' in text
    (version_dir / "features.json").write_text(text.replace('"numClasses": "3"',
                                                            '"numClasses": "2"'))
    source = sources.open_source(name, "train", str(target))
    assert source.num_classes == 2
    first = 2 * PER_CLASS  # the first record of class 2
    assert source[first - 1]["label"] == 1
    with pytest.raises(DataError, match=f"record {first} has label 2.*outside \\[0, 2\\)"):
        source[first]
    with pytest.raises(DataError, match=f"record {first} has label 2"):
        source.__getitems__([0, first])


def test_multi_label_datasets_give_arrays_of_class_ids(tmp_path):
    """A TFDS builder of our own with a Sequence(ClassLabel) label (as a multi-label stock
    dataset would have), found by folder."""
    import tensorflow_datasets as tfds
    from jpeg_datasets import draw_image, jpeg_of

    rng = np.random.default_rng(0)
    images = [jpeg_of(draw_image(i % 3, 30, 40, rng)) for i in range(6)]
    labels = [[0], [1, 2], [], [4, 0, 3], [2], [1]]

    class MultiShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("2.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, disable_shuffling=True,
                                         features=tfds.features.FeaturesDict({
                                             "photo": tfds.features.Image(),
                                             "tags": tfds.features.Sequence(
                                                 tfds.features.ClassLabel(num_classes=5)),
                                             "label": tfds.features.ClassLabel(num_classes=2)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (image, tags) in enumerate(zip(images, labels)):
                yield i, {"photo": image, "tags": tags, "label": i % 2}

    MultiShapes(data_dir=str(tmp_path), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    source = sources.open_source("multi_shapes", "train[1:]", str(tmp_path), label_key="tags",
                                 image_key="photo")
    assert source.multi_label and source.num_classes == 5 and len(source) == 5
    for i, record in enumerate(source.__getitems__(list(range(5)))):
        np.testing.assert_array_equal(record["label"], labels[i + 1])
        assert record["image"] == images[i + 1]
    with pytest.raises(DataError, match=r"image_key: 'image'.*\['photo'\]"):
        sources.open_source("multi_shapes", "train", str(tmp_path), label_key="tags")
    assert sources.open_source("multi_shapes", "train", str(tmp_path), image_key="photo"
                               )[3]["label"] == 1


@pytest.fixture
def pil_image_encoder(monkeypatch):
    """tfds.testing.mock_data makes its fake encoded images with tf.image.encode_jpeg/png; no
    TensorFlow here, so encode them with PIL instead (only the fake-data generator uses it:
    reading real records never encodes)."""
    from tensorflow_datasets.core.features import image_feature

    def encode(self, array):
        out = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(
            out, format=self.encoding_format.upper())
        return out.getvalue()

    monkeypatch.setattr(image_feature._ImageEncoder, "_encode_image", encode)


def test_mock_data_of_a_stock_dataset_reads_through_open_source(pil_image_encoder, tmp_path):
    """USE_CODE: the stock builder's own features (class names), fake records. Two limits of
    TFDS 4.9.10's mock (not of open_source): its data source's __getitems__ lacks 'self', and
    its random BBoxFeature values may have min > max (oxford_iiit_pet's head_bbox), so records
    are read one by one, from cifar100 (no bbox); oxford_iiit_pet is checked for metadata."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        pets = sources.open_source("oxford_iiit_pet", "train", str(tmp_path))
        assert len(pets) == 20 and pets.num_classes == 37 and not pets.multi_label
        assert len(pets.class_names) == 37 and pets.class_names[0] == "Abyssinian"
        for label_key, classes in (("label", 100), ("coarse_label", 20)):
            source = sources.open_source("cifar100", "test", str(tmp_path),
                                         label_key=label_key)
            assert len(source) == 20 and source.num_classes == classes
            for record in [source[i] for i in range(20)]:
                assert isinstance(record["label"], int) and 0 <= record["label"] < classes
                assert Image.open(io.BytesIO(record["image"])).format == "PNG"
            clone = pickle.loads(pickle.dumps(source))  # reopens lazily (here: mocked too)
            assert clone[4]["image"] == source[4]["image"]


THREADS_READ = """
import concurrent.futures, pickle, sys
source = pickle.loads(open(sys.argv[1], "rb").read())  # TFDS not imported yet, as in a worker
with concurrent.futures.ThreadPoolExecutor(8) as pool:  # every thread opens the source at once
    records = list(pool.map(source.__getitem__, range(16)))
sys.stdout.buffer.write(pickle.dumps([(r["image"], r["label"]) for r in records]))
"""


def test_threads_of_a_fresh_process_open_a_source_once_without_deadlock(data, tmp_path):
    """A grain worker's decoding threads may first touch the source together: one of them
    imports TFDS and opens it, and every thread reads the right records."""
    import subprocess
    import sys

    folder, data_dir, name = data
    source = sources.open_source(name, "train", data_dir)
    (tmp_path / "source.pkl").write_bytes(pickle.dumps(source))
    out = subprocess.run([sys.executable, "-c", THREADS_READ, str(tmp_path / "source.pkl")],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert pickle.loads(out.stdout) == [(source[i]["image"], source[i]["label"])
                                        for i in range(16)]

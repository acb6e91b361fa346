"""vitlib.data.prepare: image folders and list files -> TFDS array_record datasets without
TensorFlow; bad images; the manifest and verify; never half-written; the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jpeg_datasets import class_name, corrupt_files, make_image_folder

from vitlib.data import prepare, sources
from vitlib.data.datasets import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("prep") / "images", classes=3,
                             per_class=8, splits=("train", "test"), sizes=(20, 80),
                             corrupt=3, seed=5)


def _all(source):
    return source.__getitems__(list(range(len(source))))


def test_corrupt_images_are_skipped_counted_and_named(folder, tmp_path):
    bad = corrupt_files(folder)
    assert len(bad) == 3
    result = prepare.prepare_folder("shapes", folder, tmp_path, progress=False)
    assert result.built and result.splits == {"test": 24, "train": 24}
    assert result.skipped == {"test": 0, "train": 3}
    assert sorted(result.skipped_files) == [str(p) for p in bad]
    assert "skipped 3 undecodable" in result.summary()
    assert result.path == tmp_path / "shapes" / "1.0.0"
    manifest = json.loads((result.path / prepare.MANIFEST).read_text())
    assert manifest["class_names"] == [class_name(c) for c in range(3)]
    assert manifest["splits"]["train"]["num_examples"] == 24
    assert manifest["splits"]["train"]["skipped"] == 3
    # Plain TFDS reads it too (no vitlib code): sizes, class names, decoded images.
    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    builder = tfds.builder_from_directory(str(result.path))
    assert builder.info.splits["train"].num_examples == 24
    assert builder.info.features["label"].names == [class_name(c) for c in range(3)]
    record = builder.as_data_source(split="test")[9]
    reference = sorted((folder / "test" / class_name(1)).iterdir())[1]
    np.testing.assert_array_equal(record["image"], np.asarray(Image.open(reference)))
    assert record["label"] == 1
    assert record["file_name"] == f"test/{class_name(1)}/00001.jpg".encode()
    # No temporary folder is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shapes.prepare.lock", "shapes"]


def test_on_bad_image_fail_names_the_path_and_index_and_writes_nothing(folder, tmp_path):
    first_bad = corrupt_files(folder)[0]  # bad_0.jpg sorts after the 8 images of class 0
    with pytest.raises(DataError, match=f"image {first_bad} \\(index 8 of split 'train'\\)"):
        prepare.prepare_folder("shapes", folder, tmp_path, on_bad_image="fail", progress=False)
    assert not (tmp_path / "shapes").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".shapes.prepare.lock"]


def test_on_bad_image_keep_stores_them_as_they_are(folder, tmp_path):
    result = prepare.prepare_folder("shapes", folder, tmp_path, on_bad_image="keep",
                                    progress=False)
    assert result.splits["train"] == 27
    source = sources.open_source("shapes", "train", str(tmp_path))
    stored = {r["image"] for r in _all(source)}
    assert all(p.read_bytes() in stored for p in corrupt_files(folder))


def test_a_prepared_dataset_is_kept_unless_overwrite(folder, tmp_path):
    first = prepare.prepare_folder("shapes", folder, tmp_path, splits=["test"], progress=False)
    again = prepare.prepare_folder("shapes", folder, tmp_path, progress=False)
    assert first.built and not again.built and again.splits == {"test": 24}
    redone = prepare.prepare_folder("shapes", folder, tmp_path, overwrite=True, progress=False)
    assert redone.built and redone.splits == {"test": 24, "train": 24}
    assert len(sources.open_source("shapes", "train", str(tmp_path))) == 24
    assert prepare.verify("shapes", str(tmp_path)) == {"test": 24, "train": 24}


def test_verify_detects_a_changed_record_file(folder, tmp_path):
    result = prepare.prepare_folder("shapes", folder, tmp_path, progress=False)
    assert prepare.verify("shapes", str(tmp_path)) == {"test": 24, "train": 24}
    shard = next(result.path.glob("shapes-test.array_record-*"))
    image = sorted((folder / "test" / class_name(0)).iterdir())[0].read_bytes()
    data = bytearray(shard.read_bytes())
    at = data.find(image[-40:])
    assert at > 0  # array_record stores the JPEG bytes uncompressed
    data[at + 10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="split 'test'.*(changed|cannot be read)"):
        prepare.verify("shapes", str(tmp_path))
    assert prepare.main(["verify", "shapes", "--data_dir", str(tmp_path)]) == 2


def test_a_changed_manifest_digest_is_reported(folder, tmp_path):
    result = prepare.prepare_folder("shapes", folder, tmp_path, splits=["test"], progress=False)
    manifest = json.loads((result.path / prepare.MANIFEST).read_text())
    manifest["splits"]["test"]["sha256"] = "0" * 64
    (result.path / prepare.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="'test'.*has changed.*the manifest says 24"):
        prepare.verify("shapes", str(tmp_path))


def test_list_files_with_ids_names_and_separators(tmp_path):
    images = make_image_folder(tmp_path / "img", classes=3, per_class=2, splits=("all",),
                               sizes=(20, 30), seed=1)
    files = sorted(images.glob("all/*/*.jpg"))
    (tmp_path / "names.txt").write_text("zebra\ncat\ndog\n")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(
        "# path label\n"
        f"../img/all/{files[0].parent.name}/{files[0].name}\t2\n"
        f"../img/all/{files[1].parent.name}/{files[1].name},cat\n"
        f"\n../img/all/{files[2].parent.name}/{files[2].name}  zebra\n")
    (lists / "test.txt").write_text(f"../img/all/{files[5].parent.name}/{files[5].name} 1\n")
    result = prepare.prepare_folder("listed", data_dir=tmp_path / "tfds",
                                    lists={"train": lists / "train.txt",
                                           "test": lists / "test.txt"},
                                    class_names=tmp_path / "names.txt", progress=False)
    assert result.class_names == ["zebra", "cat", "dog"]
    train = sources.open_source("listed", "train", str(tmp_path / "tfds"))
    assert [r["label"] for r in _all(train)] == [2, 1, 0]
    assert [r["image"] for r in _all(train)] == [f.read_bytes() for f in files[:3]]
    assert train.class_names == ["zebra", "cat", "dog"]

    (lists / "bad.txt").write_text(f"../img/all/{files[0].parent.name}/{files[0].name}\t3\n")
    with pytest.raises(DataError, match=r"bad.txt:1: label 3 is outside \[0, 3\)"):
        prepare.prepare_folder("listed2", data_dir=tmp_path / "tfds",
                               lists={"train": lists / "bad.txt"},
                               class_names=tmp_path / "names.txt", progress=False)
    (lists / "bad.txt").write_text("\n\n../img/nope.jpg\tcat\n")
    with pytest.raises(DataError, match=r"bad.txt:3: image .*nope.jpg does not exist"):
        prepare.prepare_folder("listed2", data_dir=tmp_path / "tfds",
                               lists={"train": lists / "bad.txt"},
                               class_names=tmp_path / "names.txt", progress=False)
    (lists / "bad.txt").write_text(f"../img/all/{files[0].parent.name}/{files[0].name}\tcow\n")
    with pytest.raises(DataError, match=r"bad.txt:1: label 'cow' is not a class name"):
        prepare.prepare_folder("listed2", data_dir=tmp_path / "tfds",
                               lists={"train": lists / "bad.txt"},
                               class_names=tmp_path / "names.txt", progress=False)


def test_folder_errors_name_the_folder(tmp_path):
    images = make_image_folder(tmp_path / "img", classes=2, per_class=2, splits=("train",),
                               sizes=(20, 24))
    (images / "test" / "class_00").mkdir(parents=True)
    with pytest.raises(DataError, match=f"split 'test' \\({images / 'test'}\\) holds no image"):
        prepare.prepare_folder("s", images, tmp_path / "tfds", progress=False)
    (images / "test" / "zebra").mkdir()
    with pytest.raises(DataError, match=f"class folder {images / 'test' / 'zebra'} is not a "
                                        f"class of the class folders of {images / 'train'}"):
        prepare.prepare_folder("s", images, tmp_path / "tfds", progress=False)
    with pytest.raises(DataError, match="name: 'Bad-Name' is not allowed"):
        prepare.prepare_folder("Bad-Name", images, tmp_path / "tfds", progress=False)
    with pytest.raises(DataError, match="on_bad_image: 'ignore' is not allowed"):
        prepare.prepare_folder("s", images, tmp_path / "tfds", splits=["train"],
                               on_bad_image="ignore", progress=False)
    # A class missing from a later split is fine.
    (images / "test" / "zebra").rmdir()
    make_image_folder(images, classes=1, per_class=3, splits=("test",), sizes=(20, 24))
    result = prepare.prepare_folder("s", images, tmp_path / "tfds", progress=False)
    assert result.splits == {"test": 3, "train": 4}


def test_two_processes_building_one_dataset_take_turns(folder, tmp_path):
    code = ("import sys; from vitlib.data import prepare; "
            "r = prepare.prepare_folder('shapes', sys.argv[1], sys.argv[2], progress=False); "
            "print('BUILT' if r.built else 'KEPT')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-c", code, str(folder), str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert sorted(out.strip().splitlines()[-1] for out, _ in outputs) == ["BUILT", "KEPT"]
    assert prepare.verify("shapes", str(tmp_path)) == {"test": 24, "train": 24}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shapes.prepare.lock", "shapes"]


def test_cli_builds_reports_and_validates(folder, tmp_path, capsys):
    help_text = prepare.parser()._subparsers._group_actions[0].choices["build"].format_help()
    for option in ("--folder", "--list", "--class_names", "--splits", "--data_dir",
                   "--version", "--on_bad_image", "--overwrite", "--no-progress"):
        assert option in help_text
    assert prepare.main(["build", "shapes", "--folder", str(folder), "--data_dir",
                         str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "shapes" / "1.0.0") in out and "train 24" in out and "test 24" in out
    assert "python -m vitlib.train" in out and "dataset=shapes" in out
    assert prepare.main(["verify", "shapes", "--data_dir", str(tmp_path)]) == 0
    for argv, message in [
        (["build", "shapes", "--folder", str(tmp_path / "nope")], "--folder: .*nope is not"),
        (["build", "Shapes", "--folder", str(folder)], "name: 'Shapes' is not allowed"),
        (["build", "s", "--folder", str(folder), "--version", "1.0"], "version: '1.0'"),
        (["build", "s", "--folder", str(folder), "--splits", "val"], "splits: 'val' is not "
                                                                     "a folder"),
        (["build", "s", "--folder", str(folder), "--class_names", "x.txt"], "--class_names: "),
        (["verify", "nothing", "--data_dir", str(tmp_path)], "'nothing' is not in"),
    ]:
        assert prepare.main(argv) == 2, argv
        assert any(__import__("re").search(message, line)
                   for line in capsys.readouterr().err.splitlines()), (argv, message)
    with pytest.raises(SystemExit):
        prepare.main(["build", "s", "--folder", str(folder), "--on_bad_image", "ignore"])
    assert "invalid choice: 'ignore'" in capsys.readouterr().err


def test_the_printed_training_commands_are_sized_to_the_machine_and_valid(folder, tmp_path):
    import shlex

    from vitlib.configs import apply_overrides, load_config
    from vitlib.train.build import check_config

    result = prepare.prepare_folder("shapes", folder, tmp_path, progress=False)
    on_cpu = result.train_commands("cpu")
    assert "this CPU" in on_cpu[0][0] and "paper's scale" in on_cpu[1][0]
    assert "model.variant=Femto/8" in on_cpu[0][1] and "model.variant=S/16" in on_cpu[1][1]
    on_gpu = result.train_commands("gpu")
    assert "paper's scale on this GPU host" in on_gpu[0][0] and on_gpu[0][1] == on_cpu[1][1]
    assert on_cpu[0][1] in result.summary() or on_cpu[1][1] in result.summary()
    for _, command in on_cpu:  # each command's overrides make a config that passes the checks
        words = shlex.split(command)
        config = apply_overrides(load_config(words[words.index("--config") + 1]),
                                 [words[i + 1] for i, w in enumerate(words) if w == "--set"])
        check_config(config)

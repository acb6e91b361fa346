"""Input-pipeline throughput per CPU core: decode + inception crop + flip at 224 px from JPEG
records in an array_record file. ``make bench`` runs it.

Data: ``--images`` (600) synthetic ImageNet-like JPEGs (500x375 / 375x500 / 400x350, quality 90,
~110 KB: smooth colour fields, shapes with edges, mixed-frequency texture; flat colours would
compress unrealistically), one raw JPEG per record, written with ``ArrayRecordWriter`` to a
temporary folder.

Contenders, each in its own process pinned to ONE core (the same core), one image at a time:
  vitlib/<decoder>+<resizer>: ``image_ops.decode_inception_crop`` + ``flip_lr``, records read
      one by one with ``ArrayRecordReader`` (every decoder / resizer installed here;
      ``simplejpeg-rows`` decodes only the rows down to the crop's bottom);
  tf.data: big_vision's ``decode_jpeg_and_inception_crop(224)|flip_lr`` (``extract_jpeg_shape``,
      ``sample_distorted_bounding_box``, ``decode_and_crop_jpeg``, bilinear ``resize``,
      ``random_flip_left_right``), single-threaded tf.data over the record bytes held in memory
      (no reading cost: favours TF). TensorFlow comes from ``--tf-python`` (default ``.venv-tf``,
      else this interpreter); without it the contender is recorded as skipped, with the reason;
  torch: a ``DataLoader`` (num_workers=0) whose dataset reads records with ``ArrayRecordReader``,
      PIL decode, torchvision ``RandomResizedCrop(224, scale=(0.05, 1))``,
      ``RandomHorizontalFlip``, ``PILToTensor``.
After a warm-up pass, ``--rounds`` rounds alternate the contenders (each a full pass over the
records), so drift hits all alike; reported: median images/s/core, and ratios to tf.data, torch
and the better of the two. Results: results/benchmarks/input_pipeline.{json,md}.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vitlib.study.provenance import cpu_model

SIZE = 224
SHAPES = ((375, 500), (375, 500), (500, 375), (350, 400))
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ data

def natural_image(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    out = np.full((h, w, 3), 128.0, np.float32)
    for cells, amp in ((3, 70), (8, 35), (24, 18)):
        coarse = np.clip(rng.uniform(-amp, amp, (cells, cells, 3)) + 128, 0, 255)
        out += np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC),
                          np.float32) - 128
    canvas = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 10)):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.integers(2) else draw.rectangle)(box, fill=colour)
    image = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.8)), np.float32)
    image = image + rng.normal(0, 12, (h, w, 1))
    half = rng.normal(0, 45, (h // 2 + 1, w // 2 + 1)).astype(np.float32)
    image = image + np.asarray(Image.fromarray(half).resize((w, h), Image.BILINEAR))[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def jpegs(n: int, seed: int = 0, shapes=SHAPES) -> list[bytes]:
    """``n`` synthetic ImageNet-like JPEGs (quality 90), cycling through ``shapes``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    encoded = []
    for i in range(n):
        out = io.BytesIO()
        Image.fromarray(natural_image(*shapes[i % len(shapes)], rng)).save(out, "JPEG",
                                                                           quality=90)
        encoded.append(out.getvalue())
    return encoded


class JpegsInMemory:
    """A grain source of JPEG bytes held in memory (picklable, so grain's workers get it;
    benchmarks/accelerator.py measures the pipeline on it)."""

    name, split, num_classes, multi_label = "synthetic JPEGs", "train", 10, False

    def __init__(self, encoded: list):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.encoded[index], "label": index % self.num_classes}


def write_records(path: Path, n: int, seed: int = 0) -> dict:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), "group_size:1")
    sizes = []
    for data in jpegs(n, seed):
        writer.write(data)
        sizes.append(len(data))
    writer.close()
    return {"images": n, "mean_kb": float(np.mean(sizes) / 1e3), "shapes": SHAPES,
            "jpeg_quality": 90}


# ------------------------------------------------------------------ workers

def _reader(path):
    from array_record.python.array_record_module import ArrayRecordReader
    return ArrayRecordReader(str(path))


def make_vitlib(path, decoder, resizer):
    from vitlib.data import image_ops

    for name in {decoder, resizer} - {"pil"}:
        image_ops._module(name)  # imported now: its version goes into the report
    reader = _reader(path)
    n = reader.num_records()

    def one_pass(seed):
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            data = reader.read([i])[0]
            image_ops.flip_lr(image_ops.decode_inception_crop(data, SIZE, rng, decoder=decoder,
                                                              resizer=resizer), rng)
        return n
    return one_pass


def make_torch(path):
    import torch
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:  # CUDA torchvision wheel over CPU torch: Python parts only
        if "torchvision::" not in str(err):
            raise
        import types
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations")
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(1)
    reader = _reader(path)
    n = reader.num_records()
    tf = transforms.Compose([transforms.RandomResizedCrop(SIZE, scale=(0.05, 1.0)),
                             transforms.RandomHorizontalFlip(), transforms.PILToTensor()])

    class Records(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return tf(Image.open(io.BytesIO(reader.read([i])[0])).convert("RGB"))

    loader = torch.utils.data.DataLoader(Records(), batch_size=None, num_workers=0)

    def one_pass(seed):
        torch.manual_seed(seed)
        return sum(1 for _ in loader)
    return one_pass


def make_tf(path):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    reader = _reader(path)
    records = reader.read(list(range(reader.num_records())))

    def big_vision(data):  # decode_jpeg_and_inception_crop(224)|flip_lr, big_vision defaults
        shape = tf.image.extract_jpeg_shape(data)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape, tf.zeros([0, 0, 4], tf.float32), area_range=(0.05, 1.0),
            aspect_ratio_range=(0.75, 1.33), min_object_covered=0,
            use_image_if_no_bounding_boxes=True)
        y, x, _ = tf.unstack(begin)
        h, w, _ = tf.unstack(size)
        image = tf.image.decode_and_crop_jpeg(data, tf.stack([y, x, h, w]), channels=3)
        image = tf.image.resize(image, (SIZE, SIZE), method="bilinear", antialias=False)
        image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
        return tf.image.random_flip_left_right(image)

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices(records).map(big_vision).with_options(options)

    def one_pass(seed):
        tf.random.set_seed(seed)
        return sum(1 for _ in dataset)
    return one_pass


def worker(name: str, path: str, core: int) -> None:
    """Serve passes over the records: reads 'seed' lines, answers 'images seconds'."""
    os.sched_setaffinity(0, {core})
    if name.startswith("vitlib/"):
        decoder, resizer = name.split("/")[1].split("+")
        one_pass = make_vitlib(path, decoder, resizer)
    else:
        one_pass = {"torch": make_torch, "tf.data": make_tf}[name](path)
    versions = {}
    for module in ("PIL", "numpy", "torch", "torchvision", "tensorflow", "simplejpeg", "cv2"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    print(json.dumps({"ready": True, "versions": versions}), flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        n = one_pass(int(line))
        print(json.dumps({"images": n, "seconds": time.perf_counter() - start}), flush=True)


# ------------------------------------------------------------------ driver

class Contender:
    def __init__(self, name, python, path, core):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
            "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
        self.name = name
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", name, "--records", str(path), "--core", str(core)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env)
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise RuntimeError(err[-1] if err else "worker exited")
        self.versions = json.loads(line)["versions"]

    def run(self, seed: int) -> float:
        self.proc.stdin.write(f"{seed}\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        return out["images"] / out["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def contender_names() -> list:
    from vitlib.data import image_ops

    installed = image_ops.available_decoders()
    names = ["vitlib/pil+pil"]
    if "opencv" in installed:
        names += ["vitlib/pil+opencv", "vitlib/opencv+opencv"]
    if "simplejpeg" in installed:
        names += ["vitlib/simplejpeg+pil"]
        if "opencv" in installed:
            names += ["vitlib/simplejpeg+opencv", "vitlib/simplejpeg-rows+opencv"]
    return names + ["tf.data", "torch"]


def tf_python(arg) -> tuple:
    """(python with TensorFlow, None) or (None, why not)."""
    candidates = [arg] if arg else [str(ROOT / ".venv-tf" / "bin" / "python"), sys.executable]
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run([python, "-c", "import tensorflow, array_record"],
                                   capture_output=True, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if probe.returncode == 0:
                return python, None
    return None, (f"TensorFlow (with array_record) is not importable from {candidates}; "
                  f"'make bench' installs tensorflow-cpu into .venv-tf")


def markdown(report: dict) -> str:
    lines = [f"# Input pipeline: decode + inception crop + flip at {SIZE} px, per core", "",
             f"CPU: {report['cpu']}; {report['data']['images']} JPEGs, mean "
             f"{report['data']['mean_kb']:.0f} KB; {report['rounds']} rounds, medians; "
             f"one process pinned to one core per contender.", "",
             "| contender | img/s/core | vs tf.data | vs torch | vs best of the two |",
             "|---|---|---|---|---|"]
    for name, row in report["contenders"].items():
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | |")
            continue
        cells = [f"{row.get(k):.2f}x" if row.get(k) is not None else "-"
                 for k in ("ratio_vs_tf", "ratio_vs_torch", "ratio_vs_best")]
        lines.append(f"| {name} | {row['median_img_s']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    from vitlib.files import write_bytes_atomic, write_json

    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
              "rounds": args.rounds, "size": SIZE, "core": args.core, "contenders": {}}
    tf_py, tf_why = tf_python(args.tf_python)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.array_record"
        start = time.perf_counter()
        report["data"] = write_records(path, args.images)
        print(f"wrote {args.images} JPEGs ({report['data']['mean_kb']:.0f} KB mean) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        running = {}
        for name in contender_names():
            if name == "tf.data" and tf_py is None:
                report["contenders"][name] = {"skipped": tf_why}
                continue
            try:
                running[name] = Contender(name, tf_py if name == "tf.data" else sys.executable,
                                          path, args.core)
            except Exception as err:  # a contender that cannot start is recorded, not fatal
                report["contenders"][name] = {"skipped": f"{type(err).__name__}: {err}"}
        samples = {name: [] for name in running}
        try:
            for contender in running.values():
                contender.run(999)  # warm-up pass
            for r in range(args.rounds):
                for name, contender in running.items():
                    samples[name].append(contender.run(r))
                print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items()),
                      flush=True)
        finally:
            for contender in running.values():
                contender.close()
    medians = {name: statistics.median(v) for name, v in samples.items()}
    tf_rate, torch_rate = medians.get("tf.data"), medians.get("torch")
    best = max([v for v in (tf_rate, torch_rate) if v is not None], default=None)
    for name, value in medians.items():
        report["contenders"][name] = {
            "median_img_s": value, "samples_img_s": samples[name],
            "versions": running[name].versions,
            "ratio_vs_tf": value / tf_rate if tf_rate else None,
            "ratio_vs_torch": value / torch_rate if torch_rate else None,
            "ratio_vs_best": value / best if best else None}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), report)
    write_bytes_atomic(out.with_suffix(".md"), markdown(report).encode())
    print(markdown(report))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--core", type=int, default=0, help="the core every contender runs on")
    parser.add_argument("--tf-python", default=None,
                        help="a python with tensorflow-cpu and array_record (default .venv-tf)")
    parser.add_argument("--out", default="results/benchmarks/input_pipeline.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.records, args.core)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

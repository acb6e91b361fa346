"""vitlib.data.image_ops against independent references: TF's sample_distorted_bounding_box
re-written here from its C++ source (plain Python, decimal-free float32 via struct), PIL's plain
decode, numpy formulas."""
from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from vitlib.data import image_ops
from vitlib.data.augment import preprocess
from vitlib.data.datasets import DataError


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def tf_box(height, width, draws, area_range=(0.05, 1.0), aspect_range=(0.75, 4 / 3),
           attempts=10):
    """TF's SampleDistortedBoundingBox (no boxes, min_object_covered=0), from
    sample_distorted_bounding_box_op.cc; ``draws`` yields (kind, n) -> value."""
    min_area = f32(f32(f32(area_range[0]) * width) * height)
    max_area = f32(f32(f32(area_range[1]) * width) * height)
    lo, hi = f32(aspect_range[0]), f32(aspect_range[1])

    def lrintf(x):
        return int(round(x))  # Python's round is half to even, as lrintf

    for _ in range(attempts):
        r = f32(f32(draws("float", None) * f32(hi - lo)) + lo)
        h = lrintf(f32(math.sqrt(f32(min_area / r))))
        max_h = lrintf(f32(math.sqrt(f32(max_area / r))))
        if lrintf(f32(max_h * r)) > width:
            max_h = int((width + 0.5 - f32(1e-7)) / r)
            if lrintf(f32(max_h * r)) > width:
                max_h -= 1
        max_h = min(max_h, height)
        h = min(h, max_h)
        if h < max_h:
            h += draws("int", max_h - h + 1)
        w = lrintf(f32(h * r))
        area = float(w * h)
        if area < min_area:
            h += 1
            w = lrintf(f32(h * r))
            area = float(w * h)
        if area > max_area:
            h -= 1
            w = lrintf(f32(h * r))
            area = float(w * h)
        if area < min_area or area > max_area or w > width or h > height or w <= 0 or h <= 0:
            continue
        y = draws("int", height - h) if h < height else 0
        x = draws("int", width - w) if w < width else 0
        return y, x, h, w
    return 0, 0, height, width


def numpy_draws(seed):
    rng = np.random.default_rng(seed)

    def draw(kind, n):
        return float(rng.random(dtype=np.float32)) if kind == "float" else int(rng.integers(n))
    return draw


def jpeg(image: np.ndarray, quality=90, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality, **kw)
    return out.getvalue()


def natural(h, w, seed=0) -> np.ndarray:
    """Smooth colour field + edges + texture (not flat colours)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 5, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    base[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2] = (200, 40, 40)
    base += rng.normal(0, 8, (h, w, 1))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo():
    return jpeg(natural(300, 400))


# ------------------------------------------------------------------ crop box

@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (64, 64), (40, 600), (1, 1)])
def test_box_matches_tf_algorithm_draw_for_draw(shape):
    for seed in range(300):
        ref = tf_box(*shape, numpy_draws(seed))
        got = image_ops.inception_crop_box(*shape, np.random.default_rng(seed))
        assert got == ref, (shape, seed)


def test_box_statistics_within_ranges():
    rng = np.random.default_rng(1)
    H, W = 375, 500
    boxes = np.array([image_ops.inception_crop_box(H, W, rng) for _ in range(3000)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= H).all() and (left + w <= W).all()
    full = (h == H) & (w == W)
    area = h * w / (H * W)
    assert (area[~full] >= 0.05 - 1e-6).all() and (area <= 1 + 1e-9).all()
    ratio = w[~full] / h[~full]
    # the width is rounded from height * ratio: +-0.5 px of slack in the ratio
    assert (ratio >= 0.75 - 0.5 / h[~full]).all() and (ratio <= 4 / 3 + 0.5 / h[~full]).all()
    assert full.mean() < 0.05  # this image allows nearly every draw
    # TF draws the height uniformly (not the area): small crops are common
    assert 0.3 < np.median(area) < 0.6
    short, narrow = h < H, w < W  # TF's Uniform(H - h): never the bottom / right edge
    assert (top[short] + h[short] < H).all() and (left[narrow] + w[narrow] < W).all()


def test_box_falls_back_to_the_whole_image_when_impossible():
    # a 2000x10 strip: any box of aspect 3/4..4/3 covering >= 90% is impossible
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert image_ops.inception_crop_box(10, 2000, rng, area_range=(0.9, 1.0)) \
            == (0, 0, 10, 2000)


@pytest.mark.parametrize("bad", [dict(area_range=(0.5, 0.1)), dict(area_range=(0, 1)),
                                 dict(aspect_range=(-1, 2)), dict(attempts=0)])
def test_box_arguments_are_checked(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        image_ops.inception_crop_box(100, 100, np.random.default_rng(0), **bad)


# ------------------------------------------------------------------ decoding

def test_decode_equals_pil_full_decode(photo):
    ref = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    got = image_ops.decode(photo)
    assert got.dtype == np.uint8 and got.shape == (300, 400, 3)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_decode_converts_other_modes_to_rgb(mode):
    rgb = natural(20, 30)
    im = Image.fromarray(rgb)
    if mode == "I;16":
        grey = np.asarray(im.convert("L")).astype(np.uint16) * 257
        im = Image.fromarray(grey)  # uint16 -> "I;16"
        expect = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, 2)
    else:
        im = im.convert(mode)
        expect = np.asarray(im.convert("RGB"))
    out = io.BytesIO()
    im.save(out, format="JPEG" if mode == "CMYK" else "PNG")
    got = image_ops.decode(out.getvalue())
    assert got.shape == (20, 30, 3)
    if mode == "CMYK":
        expect = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(got, expect)


def test_truncated_or_garbage_data_raises_bad_image(photo):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    for data, what in ((photo[:len(photo) // 2], "truncated"), (photo[:-2], "truncated"),
                       (b"\xff\xd8" + bytes(500), None), (b"not an image at all", None)):
        with pytest.raises(image_ops.BadImage, match=what) as err:
            image_ops.decode(data)
        assert isinstance(err.value, DataError)
        with pytest.raises(image_ops.BadImage):
            image_ops.decode_inception_crop(data, 32, np.random.default_rng(0))


def test_load_truncated_images_set_true_is_refused(photo, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        image_ops.decode(photo[:len(photo) // 2])


def test_missing_decoder_names_its_pip_package(monkeypatch, photo):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name in ("simplejpeg", "cv2"):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ValueError, match="pip install simplejpeg"):
        image_ops.decode(photo, decoder="simplejpeg")
    with pytest.raises(ValueError, match="pip install simplejpeg"):
        image_ops.decode(photo, decoder="simplejpeg-rows")
    with pytest.raises(ValueError, match="opencv-python-headless"):
        image_ops.decode(photo, decoder="opencv")
    with pytest.raises(ValueError, match="decoder"):
        image_ops.decode(photo, decoder="tf")


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_inception_crop_is_the_box_of_the_full_decode_resized():
    """Large image, big crops: the draft (DCT-scaled) decode is used, and the result is close
    to PIL resizing the same box of the full decode."""
    data = jpeg(natural(1200, 1600, seed=3), quality=95)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        top, left, h, w = image_ops.inception_crop_box(1200, 1600, np.random.default_rng(seed),
                                                       area_range=(0.5, 1.0))
        got = image_ops.decode_inception_crop(data, 128, rng, area_range=(0.5, 1.0))
        ref = np.asarray(full.resize((128, 128), Image.BILINEAR,
                                     box=(left, top, left + w, top + h)))
        assert got.shape == (128, 128, 3)
        assert psnr(got, ref) > 30, seed


def test_inception_crop_without_draft_equals_pil_exactly(photo):
    for seed in range(5):
        top, left, h, w = image_ops.inception_crop_box(300, 400, np.random.default_rng(seed))
        got = image_ops.decode_inception_crop(photo, 224, np.random.default_rng(seed))
        ref = Image.open(io.BytesIO(photo)).convert("RGB").resize(
            (224, 224), Image.BILINEAR, box=(left, top, left + w, top + h))
        np.testing.assert_array_equal(got, np.asarray(ref))


def test_same_seed_same_pixels_and_flip(photo):
    def make(seed):
        rng = np.random.default_rng(seed)
        return image_ops.flip_lr(image_ops.decode_inception_crop(photo, 64, rng), rng)
    np.testing.assert_array_equal(make(5), make(5))
    assert not np.array_equal(make(5), make(6))


# ------------------------------------------------------------------ geometry, values

def test_flip_lr_is_np_flip_half_the_time():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    flips = 0
    for seed in range(400):
        out = image_ops.flip_lr(image, np.random.default_rng(seed))
        flipped = np.random.default_rng(seed).random() < 0.5
        np.testing.assert_array_equal(out, np.flip(image, 1) if flipped else image)
        flips += flipped
    assert 150 < flips < 250


def test_value_range_formula():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    np.testing.assert_array_equal(image_ops.value_range(x), preprocess(x))
    got = image_ops.value_range(x, 0.0, 1.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, x / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        image_ops.value_range(x.astype(np.float32))


@pytest.mark.parametrize("h,w,s", [(375, 500, 256), (500, 333, 100), (20, 30, 45)])
def test_resize_small_geometry(h, w, s):
    out = image_ops.resize_small(natural(h, w), s)
    factor = s / min(h, w)
    assert min(out.shape[:2]) == s
    assert out.shape[:2] == (round(h * factor), round(w * factor))


def test_central_crop_geometry():
    image = np.arange(7 * 10, dtype=np.uint8).reshape(7, 10, 1).repeat(3, 2)
    np.testing.assert_array_equal(image_ops.central_crop(image, 4), image[1:5, 3:7])
    with pytest.raises(ValueError, match="larger"):
        image_ops.central_crop(image, 8)


def test_eval_resize_crop_and_square_resize(photo):
    full = Image.open(io.BytesIO(photo)).convert("RGB")
    got = image_ops.decode_resize_central_crop(photo, 224)  # 300x400 -> 256x341 -> 224
    ref = np.asarray(full.resize((341, 256), Image.BOX))[16:240, 58:282]
    np.testing.assert_array_equal(got, ref)
    got = image_ops.decode_resize(photo, 96)  # decoded at 1/2 scale (300 / 96 >= 2)
    assert got.shape == (96, 96, 3)
    assert psnr(got, np.asarray(full.resize((96, 96), Image.BILINEAR))) > 30
    got = image_ops.decode_resize(photo, 200)  # full scale: exactly PIL's
    np.testing.assert_array_equal(got, np.asarray(full.resize((200, 200), Image.BILINEAR)))
    with pytest.raises(ValueError, match="resize_size"):
        image_ops.decode_resize_central_crop(photo, 224, resize_size=200)


# ------------------------------------------------------------------ optional back-ends

@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv"])
def test_optional_decoders_agree_with_pil(decoder, photo):
    if decoder not in image_ops.available_decoders():
        pytest.skip(f"{decoder} is not installed")
    ref = image_ops.decode(photo)
    got = image_ops.decode(photo, decoder=decoder)
    assert got.shape == ref.shape and psnr(got, ref) > 35
    for seed in range(3):
        a = image_ops.decode_inception_crop(photo, 64, np.random.default_rng(seed))
        b = image_ops.decode_inception_crop(photo, 64, np.random.default_rng(seed),
                                            decoder=decoder)
        assert psnr(a, b) > 28
    with pytest.raises(image_ops.BadImage):
        image_ops.decode(photo[:len(photo) // 2], decoder=decoder)


# ------------------------------------------------------------------ "simplejpeg-rows"

@pytest.fixture
def rows_decoder():
    if "simplejpeg-rows" not in image_ops.available_decoders():
        pytest.skip("simplejpeg is not installed")


def rows_jpegs():
    """(name, JPEG bytes): landscape / portrait, 4:2:0 / 4:2:2 / 4:4:4, grey, progressive."""
    out = []
    for i, (h, w, kw) in enumerate([(375, 500, {}), (500, 375, {}), (350, 400, {}),
                                    (375, 500, dict(subsampling=0)),
                                    (500, 375, dict(subsampling=1)),
                                    (375, 500, dict(progressive=True)), (47, 61, {})]):
        out.append((f"{h}x{w}{kw}", jpeg(natural(h, w, seed=i), **kw)))
    grey = np.asarray(Image.fromarray(natural(300, 420, seed=9)).convert("L"))
    out.append(("grey", jpeg(grey)))
    return out


def count_cut_decodes(monkeypatch) -> list:
    """Records the decoded source height of every row-limited decode."""
    cuts, real = [], image_ops._simplejpeg_rows

    def spy(*args, **kw):
        out = real(*args, **kw)
        if out is not None:
            cuts.append(out[1])
        return out
    monkeypatch.setattr(image_ops, "_simplejpeg_rows", spy)
    return cuts


def test_rows_decoder_equals_box_of_an_independent_full_decode(rows_decoder, monkeypatch):
    """Reference: PIL decodes the whole JPEG, the box is sliced and resized with OpenCV.
    size 512 > every box: no DCT scaling, so only the decoders' rounding differs."""
    import cv2
    cuts = count_cut_decodes(monkeypatch)
    for name, data in rows_jpegs():
        full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        for seed in range(6):
            top, left, h, w = image_ops.inception_crop_box(*full.shape[:2],
                                                           np.random.default_rng(seed))
            ref = cv2.resize(full[top:top + h, left:left + w], (512, 512),
                             interpolation=cv2.INTER_LINEAR)
            got = image_ops.decode_inception_crop(data, 512, np.random.default_rng(seed),
                                                  decoder="simplejpeg-rows")
            assert got.shape == (512, 512, 3) and got.dtype == np.uint8
            diff = np.abs(got.astype(int) - ref)
            assert diff.max() <= 3 and diff.mean() < 0.5, (name, seed, diff.max())
    assert len(cuts) > 10  # most boxes end above the last iMCU row: fewer rows decoded


def rows_reference(data, size, seed, resizer):
    """The box of a whole-image simplejpeg decode at the power-of-two DCT scale 1/s (the
    largest s in 1, 2, 4, 8 with the box >= s * size on both sides), resized."""
    import simplejpeg
    h, w = simplejpeg.decode_jpeg_header(data)[:2]
    top, left, ch, cw = image_ops.inception_crop_box(h, w, np.random.default_rng(seed))
    s = max(s for s in (1, 2, 4, 8) if s == 1 or min(ch, cw) >= s * size)
    full = simplejpeg.decode_jpeg(data, "RGB", min_height=-(-h // s), min_width=-(-w // s))
    assert full.shape[:2] == (-(-h // s), -(-w // s))
    return image_ops._resize_box(full, (top / s, left / s, ch / s, cw / s), size, size, resizer)


def test_rows_decoder_equals_the_whole_decode_at_the_same_scale(rows_decoder, monkeypatch):
    """Same rng: the same pixels as the box of the whole image decoded (OpenCV resize), DCT-
    scaled or not; within one grey level with PIL's resize (module docstring)."""
    cuts = count_cut_decodes(monkeypatch)
    for name, data in rows_jpegs():
        for size in (224, 96, 32):
            for seed in range(5):
                for resizer, tol in (("opencv", 0), ("pil", 1)):
                    got = image_ops.decode_inception_crop(data, size, np.random.default_rng(seed),
                                                          decoder="simplejpeg-rows",
                                                          resizer=resizer)
                    ref = rows_reference(data, size, seed, resizer)
                    assert np.abs(got.astype(int) - ref).max() <= tol, (name, size, seed, resizer)
    assert len(cuts) > 50
    # the default resizer of "simplejpeg-rows" is OpenCV's
    data = rows_jpegs()[0][1]
    np.testing.assert_array_equal(
        image_ops.decode_inception_crop(data, 64, np.random.default_rng(1),
                                        decoder="simplejpeg-rows"),
        image_ops.decode_inception_crop(data, 64, np.random.default_rng(1),
                                        decoder="simplejpeg-rows", resizer="opencv"))


def test_rows_decoder_decodes_progressive_and_other_calls_whole(rows_decoder, monkeypatch):
    cuts = count_cut_decodes(monkeypatch)
    progressive = dict(rows_jpegs())["375x500{'progressive': True}"]
    for seed in range(5):
        np.testing.assert_array_equal(
            image_ops.decode_inception_crop(progressive, 64, np.random.default_rng(seed),
                                            decoder="simplejpeg-rows"),
            rows_reference(progressive, 64, seed, "opencv"))
    data = rows_jpegs()[0][1]
    np.testing.assert_array_equal(image_ops.decode(data, decoder="simplejpeg-rows"),
                                  image_ops.decode(data, decoder="simplejpeg"))
    for fn, args in ((image_ops.decode_resize, (96,)),
                     (image_ops.decode_resize_central_crop, (224,))):
        got = fn(data, *args, decoder="simplejpeg-rows")
        ref = fn(data, *args, decoder="opencv")  # the same power-of-two DCT scales
        assert got.shape == ref.shape and psnr(got, ref) > 40
    assert cuts == []


def test_rows_decoder_is_deterministic(rows_decoder):
    data = rows_jpegs()[1][1]

    def make(seed):
        rng = np.random.default_rng(seed)
        return image_ops.flip_lr(image_ops.decode_inception_crop(
            data, 64, rng, decoder="simplejpeg-rows"), rng)
    np.testing.assert_array_equal(make(5), make(5))
    assert not np.array_equal(make(5), make(6))


def test_rows_decoder_truncated_or_garbage_raises_bad_image(rows_decoder, monkeypatch):
    data = rows_jpegs()[0][1]  # 375x500 baseline
    # a seed whose box ends in the top half: the cut decode is used
    seed = next(s for s in range(1000) if sum(image_ops.inception_crop_box(
        375, 500, np.random.default_rng(s))[::2]) < 150)
    cuts = count_cut_decodes(monkeypatch)
    image_ops.decode_inception_crop(data, 32, np.random.default_rng(seed),
                                    decoder="simplejpeg-rows")
    assert len(cuts) == 1
    sos = data.index(b"\xff\xda")
    marker_in_rows = data[:sos + 40] + b"\xff\xd9" + data[sos + 40:]  # premature marker
    for bad in (data[:len(data) // 2], data[:int(len(data) * 0.9)], data[:-2],
                marker_in_rows, b"\xff\xd8" + bytes(500), b"not an image at all"):
        with pytest.raises(image_ops.BadImage):  # truncated below the box: still refused
            image_ops.decode_inception_crop(bad, 32, np.random.default_rng(seed),
                                            decoder="simplejpeg-rows")

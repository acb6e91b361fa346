"""big_vision's image preprocessing on encoded bytes (JPEG, PNG, ...), with numpy and PIL: no
TensorFlow. Pure functions; the only randomness is an explicit ``np.random.Generator``, so the
caller decides determinism (the grain pipeline draws one from ``(seed, step, example)``).

Training (``decode_jpeg_and_inception_crop(size)|flip_lr|value_range(-1, 1)`` in big_vision):

- ``inception_crop_box``: ``tf.image.sample_distorted_bounding_box`` with no boxes
  (``use_image_if_no_bounding_boxes=True, min_object_covered=0``), re-implemented draw for draw
  in float32: per attempt an aspect ratio ``r ~ U[aspect_range)``, then an integer HEIGHT uniform
  between ``lrint(sqrt(min_area / r))`` and ``lrint(sqrt(max_area / r))`` (clipped so that the
  box fits; NOT a uniform area fraction), ``width = lrint(height * r)``, TF's +-1 row repairs of
  rounding, then the offset ``y ~ U{0 .. H - h - 1}``, ``x ~ U{0 .. W - w - 1}`` (TF's
  ``Uniform(H - h)``: a box smaller than the image never touches its bottom / right edge). After
  ``attempts`` failures the box is the whole image. Only the random-number generator differs from
  TF (numpy's instead of Philox), so the boxes follow the same distribution, not the same
  sequence.
- ``decode_inception_crop``: the box is drawn on the size read from the header (no decoding),
  then the JPEG is decoded at the coarsest DCT scale (1/2, 1/4, 1/8 with PIL; M/8 with
  simplejpeg) at which the box still spans >= ``size`` pixels on both sides, so no detail that
  the output could hold is lost; the box (in scaled, sub-pixel coordinates) is resized to
  ``size x size``. TF instead decodes only the box's rows and columns at full scale
  (``decode_and_crop_jpeg``); ``decoder="simplejpeg-rows"`` decodes only the rows down to the
  box's bottom (below).
- ``flip_lr``: a horizontal flip with probability 1/2 (one ``rng.random()`` draw).
- ``value_range``: uint8 -> float32 ``[vmin, vmax]``, the same arithmetic as
  ``augment.preprocess`` for (-1, 1).

Evaluation: ``decode_resize_central_crop`` (the smaller side to ``resize_size``, default
``round(size * 256 / 224)``, i.e. ImageNet's 256 -> 224, then the centre square), and
``decode_resize`` (a square resize, big_vision's few-shot ``resize(224)``).

Resampling: ``resizer="pil"`` (default) is PIL's BILINEAR, which is antialiased when shrinking
(its triangle filter widens with the scale); big_vision's ``tf.image.resize`` default is bilinear
WITHOUT antialiasing (same as PIL's when enlarging). ``resizer="opencv"`` is OpenCV's INTER_LINEAR:
half-pixel centres, no antialiasing, i.e. TF's bilinear (up to OpenCV's 11-bit fixed-point
weights), and ~4x faster than PIL's. ``resize_small`` shrinks with PIL's BOX filter (TF's
``area``, big_vision's ``resize_small`` default) and enlarges with BILINEAR. Results are uint8,
rounded (TF truncates the float result when casting: a -0.5 grey-level bias that is not copied).

Decoders (``decoder=``): ``"pil"`` (default; Pillow is a core dependency), ``"simplejpeg"``
(``pip install simplejpeg``; libjpeg-turbo with M/8 DCT scaling), ``"opencv"``
(``pip install opencv-python-headless``; IMREAD_REDUCED_COLOR_2/4/8) and ``"simplejpeg-rows"``
(simplejpeg, decoding only the rows that the inception crop needs), each only if installed
(asking for a missing one is an error naming its pip package). simplejpeg and opencv decode JPEG
only; other formats go through PIL. ``"opencv"`` and ``"simplejpeg-rows"`` resize with
``"opencv"`` unless ``resizer=`` says otherwise, the others with ``"pil"``. Decoders differ in
their IDCT / upsampling by a grey level or two, so a run's pixels depend on the decoder (fixed
per config: never chosen by what is installed). Measured speeds:
``benchmarks/input_pipeline.py``.

``"simplejpeg-rows"``: simplejpeg at the DCT scales 1/8, 1/4, 1/2 only (as PIL and OpenCV;
libjpeg-turbo's 3/8 .. 7/8 IDCTs have no SIMD code and decode SLOWER than full scale, which
costs ``"simplejpeg"`` ~15% on 224 crops of ImageNet-sized images), and in
``decode_inception_crop`` only the rows that the box needs: a single-scan sequential JPEG
(baseline; not progressive) is given a frame header whose height ends one iMCU row (8 or 16 px)
below the box's bottom (plus the resize filter's reach), so libjpeg-turbo stops there: ~15%
fewer rows decoded on ImageNet-like crops (the rows above the box and the columns beside it are
still decoded; TF's ``decode_and_crop_jpeg`` skips their IDCT too). The margin row keeps chroma
upsampling at the box's bottom edge as in a full decode, so with ``resizer="opencv"`` the result
is pixel-identical to resizing the box of a whole-image simplejpeg decode at the same scale;
with ``"pil"`` within one grey level (Pillow orders its two resampling passes by the image's
shape, which the shorter decode changes). libjpeg then meets the unread rows' data as
"extraneous bytes before marker": the first warning, and only that one, is accepted (decoding is
strict otherwise: a warning met before it, e.g. a truncation, or corrupt data that libjpeg
flags within the rows read, raises ``BadImage``; corrupt data below them goes unseen). Progressive
or multi-scan JPEGs, and boxes that reach the last iMCU row, are decoded whole.

Decoding is strict: truncated or undecodable data raises ``BadImage`` with the decoder's reason
(PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False: set True, PIL pads a truncated JPEG
with grey without a word, so ``decode`` refuses to run). Images become RGB like TF's
``decode_image(channels=3)``: grey repeated, alpha dropped, palettes expanded, CMYK converted,
16-bit scaled by 1/256; EXIF orientation is ignored (as TF does).
"""
from __future__ import annotations

import io
import math
import struct
from typing import Optional

import numpy as np
from PIL import Image, ImageFile

from vitlib.data.datasets import DataError

DECODERS = ("pil", "simplejpeg", "opencv", "simplejpeg-rows")
RESIZERS = ("pil", "opencv")
DEFAULT_DECODER = "pil"
PIP_PACKAGES = {"simplejpeg": "simplejpeg", "simplejpeg-rows": "simplejpeg",
                "opencv": "opencv-python-headless"}
_SIMPLEJPEG = ("simplejpeg", "simplejpeg-rows")
_OPENCV_RESIZE = ("opencv", "simplejpeg-rows")  # decoders whose default resizer is "opencv"
EVAL_RESIZE_RATIO = 256 / 224  # ImageNet evaluation: resize the smaller side to 256, crop 224
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
               Image.DecompressionBombError)
_JPEG_SOI = b"\xff\xd8"


class BadImage(DataError):
    """Encoded image data that cannot be decoded (truncated, corrupt, not an image)."""


# ------------------------------------------------------------------ back-ends

def _module(name: str):
    """The simplejpeg / cv2 module, or an error naming the pip package."""
    try:
        if name in _SIMPLEJPEG:
            import simplejpeg
            return simplejpeg
        import cv2
        cv2.setNumThreads(1)  # one image per call: parallelism belongs to the pipeline
        return cv2
    except ImportError:
        raise ValueError(f"decoder/resizer {name!r} needs the package "
                         f"'{PIP_PACKAGES[name]}': pip install {PIP_PACKAGES[name]}") from None


def _check_choice(decoder: str, resizer: Optional[str]) -> str:
    if decoder not in DECODERS:
        raise ValueError(f"decoder: {decoder!r} is not allowed; choose one of {list(DECODERS)}")
    resizer = resizer or ("opencv" if decoder in _OPENCV_RESIZE else "pil")
    if resizer not in RESIZERS:
        raise ValueError(f"resizer: {resizer!r} is not allowed; choose one of {list(RESIZERS)}")
    for name in dict.fromkeys((decoder, resizer)):  # the decoder's package is named first
        if name != "pil":
            _module(name)
    return resizer


def available_decoders() -> list:
    """The decoders whose packages are installed here."""
    out = []
    for name in DECODERS:
        try:
            if name != "pil":
                _module(name)
            out.append(name)
        except ValueError:
            pass
    return out


def _check_size(value, name: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: {value!r} is not allowed; use a positive integer")
    return int(value)


def _open(data: bytes) -> Image.Image:
    """PIL's lazy open: the header only, nothing decoded yet."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other "
                           "code): PIL would decode truncated images silently; set it to False")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImage(f"image data must be bytes, got {type(data).__name__}")
    try:
        return Image.open(io.BytesIO(data))
    except _PIL_ERRORS as err:
        raise BadImage(f"not a readable image ({len(data)} bytes): {err}") from None


def _pil_rgb(im: Image.Image) -> Image.Image:
    """Decode (PIL) and convert to an RGB PIL image."""
    try:
        im.load()
        if im.mode == "RGB":
            return im
        if im.mode.startswith("I;16"):
            return Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
                                   ).convert("RGB")
        return im.convert("RGB")
    except _PIL_ERRORS as err:
        raise BadImage(f"cannot decode the {im.format or 'image'} data: {err}") from None


def _shape(image) -> tuple:
    """(height, width) of an ndarray or a PIL image."""
    return image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]


def _array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    return np.asarray(image)[..., :3] if image.mode == "RGBX" else np.asarray(image)


def _is_jpeg(data) -> bool:
    return bytes(data[:2]) == _JPEG_SOI


def image_size(data: bytes) -> tuple:
    """(height, width) from the header, without decoding."""
    width, height = _open(data).size
    return height, width


def _header(data: bytes, decoder: str):
    """(height, width, PIL image opened lazily or None) from the header alone."""
    if decoder in _SIMPLEJPEG and _is_jpeg(data):
        try:
            height, width = _module("simplejpeg").decode_jpeg_header(data)[:2]
        except ValueError as err:
            raise BadImage(f"cannot decode the JPEG data: {err}") from None
        return height, width, None
    im = _open(data)
    return im.size[1], im.size[0], im


def _jpeg_frame(data) -> Optional[tuple]:
    """(offset of the SOF0/SOF1 segment, iMCU height in pixels) of a single-scan sequential
    Huffman JPEG, else None (progressive, arithmetic, lossless, several scans, unparsable)."""
    i, n, sof, imcu = 2, len(data), None, None
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if marker not in (0xC0, 0xC1) or sof is not None or i + 10 > n:
                return None
            count = data[i + 9]
            if count < 1 or i + 10 + 3 * count > n or ((data[i + 5] << 8) | data[i + 6]) == 0:
                return None
            sof = i
            imcu = 8 * max(data[i + 11 + 3 * k] & 0x0F for k in range(count))
        elif marker == 0xDA:  # start of scan: entropy-coded data follows
            # a sequential scan with every component is the only scan (each component is in
            # exactly one scan); otherwise libjpeg would buffer the whole image first
            if sof is None or i + 5 > n or data[i + 4] != data[sof + 9]:
                return None
            return sof, imcu
        i += 2 + length
    return None


def _simplejpeg_rows(data, height: int, width: int, rows: int, m: int, colorspace: str):
    """(image, decoded source height): only the first ``rows`` source rows' iMCU rows plus one
    more decoded, at scale m/8 (module docstring), or None where that saves nothing."""
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    sof, imcu = frame
    cut = (-(-rows // imcu) + 1) * imcu
    if -(-cut // imcu) >= -(-height // imcu):
        return None
    sj = _module("simplejpeg")
    patched = bytearray(data)
    patched[sof + 5:sof + 7] = cut.to_bytes(2, "big")
    patched = bytes(patched)
    size = dict(min_height=-(-cut * m // 8), min_width=-(-width * m // 8))
    try:
        out_h, out_w = sj.decode_jpeg_header(patched, **size)[:2]
    except ValueError as err:
        raise BadImage(f"cannot decode the JPEG data: {err}") from None
    image = np.empty((out_h, out_w, len(colorspace)), np.uint8)
    try:
        sj.decode_jpeg(patched, colorspace=colorspace, buffer=image, **size)
    except ValueError as err:
        # strict decoding stops at the first warning; libjpeg meets the unread rows' data
        # only in jpeg_finish_decompress, after every row is in ``image``
        if "extraneous bytes before marker" not in str(err):
            raise BadImage(f"cannot decode the JPEG data: {err}") from None
    return image, cut


def _decode_scaled(data: bytes, header, need_h: float, need_w: float, decoder: str,
                   for_pil: bool = False, rows: Optional[int] = None):
    """(uint8 RGB image, scale = decoded / original width): the image decoded at the coarsest
    DCT scale that keeps >= 1 decoded pixel per output pixel, where ``need_h``, ``need_w`` are
    the original pixels per output pixel of the region wanted (vertically, horizontally).
    ``rows``: only the first ``rows`` original rows are needed ("simplejpeg-rows" decodes
    fewer rows then: the image returned is shorter than the original, never narrower)."""
    height, width, im = header
    if decoder in _SIMPLEJPEG and _is_jpeg(data):
        sj = _module("simplejpeg")
        if decoder == "simplejpeg-rows":  # 1/8, 1/4, 1/2, 1: the SIMD IDCTs (module docstring)
            m = 8 // _pil_scale(need_h, need_w)
        else:  # the smallest M of libjpeg-turbo's M/8 (M <= 8) with M/8 * need >= 1 on both axes
            m = max(1, min(8, math.ceil(8.0 / min(need_h, need_w) - 1e-9)))
        colorspace = "RGBX" if for_pil else "RGB"
        cut = None
        if decoder == "simplejpeg-rows" and rows is not None and rows < height:
            cut = _simplejpeg_rows(data, height, width, rows, m, colorspace)
        if cut is not None:
            image, source_h = cut
        else:
            source_h = height
            try:
                image = sj.decode_jpeg(data, colorspace=colorspace,
                                       min_height=-(-height * m // 8),
                                       min_width=-(-width * m // 8))
            except ValueError as err:
                raise BadImage(f"cannot decode the JPEG data: {err}") from None
        # the factor libjpeg-turbo used: ceil(size * M / 8) is the decoded size
        used = next((k for k in range(1, 17) if -(-width * k // 8) == image.shape[1]
                     and -(-source_h * k // 8) == image.shape[0]), None)
        scale = used / 8 if used else image.shape[1] / width
        if for_pil:  # RGBX rows are what PIL holds: shared, not copied
            image = Image.frombuffer("RGBX", image.shape[1::-1], image, "raw", "RGBX", 0, 1)
        return image, scale
    if decoder == "opencv" and _is_jpeg(data):
        cv2 = _module("opencv")
        s = _pil_scale(need_h, need_w)
        flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[s]
        # OpenCV decodes a truncated JPEG with a grey fill and only a warning: data without an
        # end-of-image marker near its end is refused first.
        if b"\xff\xd9" not in bytes(data[-64:]):
            raise BadImage(f"truncated JPEG data ({len(data)} bytes, no end-of-image marker)")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if bgr is None or bgr.ndim != 3:
            raise BadImage(f"cannot decode the JPEG data ({len(data)} bytes; OpenCV)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 1 / s
    if im is None:
        im = _open(data)
    s = _pil_scale(need_h, need_w)
    if s > 1 and im.format == "JPEG" and im.draft(None, (width // s, height // s)):
        return _pil_rgb(im), 1 / s  # libjpeg's 1/s DCT scaling: size ceil(W / s)
    return _pil_rgb(im), 1.0


def _pil_scale(need_h: float, need_w: float) -> int:
    """The largest of 1, 2, 4, 8 that is <= both need_* (original pixels per output pixel)."""
    limit = min(need_h, need_w)
    return next((s for s in (8, 4, 2) if s <= limit + 1e-9), 1)


def decode(data: bytes, decoder: str = DEFAULT_DECODER) -> np.ndarray:
    """The whole image, uint8 [H, W, 3] RGB. ``BadImage`` if it cannot be decoded."""
    _check_choice(decoder, None)
    image = _array(_decode_scaled(data, _header(data, decoder), 1.0, 1.0, decoder)[0])
    return image if image.flags.writeable else image.copy()


# ------------------------------------------------------------------ geometry

def inception_crop_box(height: int, width: int, rng: np.random.Generator,
                       area_range=(0.05, 1.0), aspect_range=(3 / 4, 4 / 3),
                       attempts: int = 10) -> tuple:
    """(top, left, crop_height, crop_width): TF's ``sample_distorted_bounding_box`` with no
    bounding boxes (module docstring). Draws per attempt: ``rng.random(dtype=float32)`` (aspect),
    ``rng.integers(n)`` for the height when it has a range, then for y and x on success."""
    height, width = _check_size(height, "height"), _check_size(width, "width")
    attempts = _check_size(attempts, "attempts")
    a_min, a_max = (float(v) for v in area_range)
    r_min, r_max = (float(v) for v in aspect_range)
    if not 0 < a_min <= a_max <= 1:
        raise ValueError(f"area_range: {tuple(area_range)!r} is not allowed; use "
                         f"0 < min <= max <= 1 (fractions of the image area)")
    if not 0 < r_min <= r_max:
        raise ValueError(f"aspect_range: {tuple(aspect_range)!r} is not allowed; use "
                         f"0 < min <= max (width / height)")
    f32 = np.float32
    min_area = f32(a_min) * f32(width) * f32(height)
    max_area = f32(a_max) * f32(width) * f32(height)
    r_lo, r_span = f32(r_min), f32(r_max) - f32(r_min)
    for _ in range(attempts):
        ratio = f32(rng.random(dtype=np.float32) * r_span + r_lo)
        box = _random_crop(width, height, min_area, max_area, ratio, rng)
        if box is not None:
            return box
    return 0, 0, height, width


def _random_crop(width: int, height: int, min_area, max_area, ratio, rng):
    """TF's ``GenerateRandomCrop`` (float32 arithmetic, lrintf = round half to even)."""
    f32 = np.float32

    def lrint(x) -> int:
        return int(np.rint(f32(x)))

    h = lrint(np.sqrt(f32(min_area / ratio)))
    max_h = lrint(np.sqrt(f32(max_area / ratio)))
    if lrint(f32(max_h) * ratio) > width:
        # the largest height whose rounded width fits (TF's double-precision expression)
        max_h = int((width + 0.5 - float(f32(1e-7))) / float(ratio))
        if lrint(f32(max_h) * ratio) > width:
            max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
        h += int(rng.integers(max_h - h + 1))
    w = lrint(f32(h) * ratio)
    area = f32(w * h)
    if area < min_area:
        h += 1
        w = lrint(f32(h) * ratio)
        area = f32(w * h)
    if area > max_area:
        h -= 1
        w = lrint(f32(h) * ratio)
        area = f32(w * h)
    if area < min_area or area > max_area or w > width or h > height or w <= 0 or h <= 0:
        return None
    y = int(rng.integers(height - h)) if h < height else 0
    x = int(rng.integers(width - w)) if w < width else 0
    return y, x, h, w


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` square (offsets ``(H - size) // 2``, as big_vision's)."""
    size = _check_size(size)
    h, w = image.shape[:2]
    if size > h or size > w:
        raise ValueError(f"central_crop: size {size} is larger than the image ({h}x{w})")
    dy, dx = (h - size) // 2, (w - size) // 2
    return image[dy:dy + size, dx:dx + size]


def _resize_box(image: np.ndarray, box, out_h: int, out_w: int, resizer: str,
                shrink_filter=Image.Resampling.BILINEAR) -> np.ndarray:
    """The (sub-pixel) ``box`` = (top, left, height, width) of ``image`` resized to
    out_h x out_w."""
    top, left, bh, bw = box
    if resizer == "opencv":
        cv2 = _module("opencv")
        image = _array(image)
        y0, x0 = int(math.floor(top)), int(math.floor(left))
        y1, x1 = int(math.ceil(top + bh)), int(math.ceil(left + bw))
        if (y0, x0, y1 - y0, x1 - x0) == (top, left, bh, bw):  # whole pixels: slice, resize
            return cv2.resize(image[y0:y1, x0:x1], (out_w, out_h),
                              interpolation=cv2.INTER_LINEAR)
        # sub-pixel box: an affine map of output pixel centres into the image
        sx, sy = bw / out_w, bh / out_h
        m = np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5]])
        return cv2.warpAffine(image, m, (out_w, out_h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    if (top, left, bh, bw) == (0, 0, *_shape(image)) and (out_h, out_w) == _shape(image):
        return _array(image)
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    resample = shrink_filter if (bh > out_h and bw > out_w) else Image.Resampling.BILINEAR
    return _array(im.resize((out_w, out_h), resample, box=(left, top, left + bw, top + bh)))


def resize_small(image: np.ndarray, smaller_size: int, resizer: str = "pil") -> np.ndarray:
    """The image scaled (aspect kept) so that its smaller side is ``smaller_size``; the other
    side is ``round(side * smaller_size / smaller_side)`` (half to even, as ``tf.round``)."""
    smaller_size = _check_size(smaller_size, "smaller_size")
    h, w = _shape(image)
    factor = np.float32(smaller_size) / np.float32(min(h, w))
    out_h, out_w = int(np.rint(np.float32(h) * factor)), int(np.rint(np.float32(w) * factor))
    return _resize_box(image, (0, 0, h, w), out_h, out_w, resizer, Image.Resampling.BOX)


# ------------------------------------------------------------------ decode + geometry

def decode_inception_crop(data: bytes, size: int, rng: np.random.Generator,
                          area_range=(0.05, 1.0), aspect_range=(3 / 4, 4 / 3),
                          decoder: str = DEFAULT_DECODER,
                          resizer: Optional[str] = None) -> np.ndarray:
    """big_vision's ``decode_jpeg_and_inception_crop(size)``: uint8 [size, size, 3]."""
    size = _check_size(size)
    resizer = _check_choice(decoder, resizer)
    header = _header(data, decoder)
    top, left, ch, cw = inception_crop_box(header[0], header[1], rng, area_range, aspect_range)
    image, scale = _decode_scaled(data, header, ch / size, cw / size, decoder,
                                  for_pil=resizer == "pil",
                                  rows=top + ch + math.ceil(ch / size) + 1)  # + filter reach
    return _resize_box(image, (top * scale, left * scale, ch * scale, cw * scale),
                       size, size, resizer)


def flip_lr(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` mirrored left-right with probability 1/2 (a view; one ``rng.random()``)."""
    return image[:, ::-1] if rng.random() < 0.5 else image


def value_range(images: np.ndarray, vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """uint8 [0, 255] -> float32 [vmin, vmax] (for (-1, 1) bit-identical to
    ``augment.preprocess``)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"value_range: images must be uint8 [0, 255], got {images.dtype}")
    return images.astype(np.float32) * ((vmax - vmin) / 255.0) + vmin


def decode_resize(data: bytes, size: int, decoder: str = DEFAULT_DECODER,
                  resizer: Optional[str] = None) -> np.ndarray:
    """The whole image resized to ``size`` x ``size`` (aspect not kept; big_vision's
    ``decode|resize(size)``): uint8 [size, size, 3]."""
    size = _check_size(size)
    resizer = _check_choice(decoder, resizer)
    header = _header(data, decoder)
    image, _ = _decode_scaled(data, header, header[0] / size, header[1] / size, decoder,
                              for_pil=resizer == "pil")
    return _resize_box(image, (0, 0, *_shape(image)), size, size, resizer)


def decode_resize_central_crop(data: bytes, size: int, resize_size: Optional[int] = None,
                               decoder: str = DEFAULT_DECODER,
                               resizer: Optional[str] = None) -> np.ndarray:
    """Evaluation: the smaller side resized to ``resize_size`` (default
    ``round(size * 256 / 224)``: 224 -> 256, 384 -> 439), then the centre ``size`` square."""
    size = _check_size(size)
    resize_size = (int(round(size * EVAL_RESIZE_RATIO)) if resize_size is None
                   else _check_size(resize_size, "resize_size"))
    if resize_size < size:
        raise ValueError(f"resize_size: {resize_size} is smaller than size {size}")
    resizer = _check_choice(decoder, resizer)
    header = _header(data, decoder)
    need = min(header[0], header[1]) / resize_size
    image, _ = _decode_scaled(data, header, need, need, decoder, for_pil=resizer == "pil")
    return central_crop(resize_small(image, resize_size, resizer), size)

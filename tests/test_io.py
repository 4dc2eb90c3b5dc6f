import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from leukomorph.errors import ImageReadError
from leukomorph.io import expand_inputs, read_image


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_png_roundtrip(rgb_png):
    img = read_image(rgb_png())
    assert img.pixels.shape == (64, 64, 3) and img.pixels.dtype == np.uint8
    assert tuple(img.pixels[0, 0]) == (200, 120, 160)
    assert len(img.sha256) == 64 and img.notes == ()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is not an image at all" * 10, "not a recognised image format"),
    ],
)
def test_bad_bytes(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert reason in str(e.value) and str(p) in str(e.value)


def test_truncated_png(tmp_path):
    data = _png_bytes(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    p = tmp_path / "trunc.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(p)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.getvalue()[:300])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(p)


def test_decompression_bomb(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(p)  # 81 MP, a few kB on disk
    assert p.stat().st_size < 100_000
    with pytest.raises(ImageReadError, match="too large"):
        read_image(p)


def test_grayscale_converted(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.full((20, 30), 77, np.uint8)).save(p)
    img = read_image(p)
    assert img.pixels.shape == (20, 30, 3) and (img.pixels == 77).all()
    assert any("grayscale" in n for n in img.notes)


def test_alpha_composited_on_white(tmp_path):
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[..., 0] = 255
    arr[:8, :, 3] = 255  # top half opaque red, bottom transparent
    p = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(p)
    img = read_image(p)
    assert tuple(img.pixels[0, 0]) == (255, 0, 0)
    assert tuple(img.pixels[15, 0]) == (255, 255, 255)
    assert any("alpha" in n for n in img.notes)


def test_16bit_grayscale_png(tmp_path):
    arr = np.full((12, 12), 65535, np.uint16)
    arr[0, 0] = 0
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    img = read_image(p)
    assert img.pixels[1, 1, 0] == 255 and img.pixels[0, 0, 0] == 0
    assert any("16-bit" in n for n in img.notes)


def test_16bit_rgb_tiff(tmp_path):
    arr = np.zeros((10, 14, 3), np.uint16)
    arr[..., 1] = 257 * 100
    p = tmp_path / "c16.tif"
    tifffile.imwrite(p, arr, photometric="rgb")
    img = read_image(p)
    assert img.pixels.shape == (10, 14, 3) and img.pixels[0, 0, 1] == 100


def test_float_tiff_rejected(tmp_path):
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, np.zeros((10, 10), np.float32))
    with pytest.raises(ImageReadError, match="not supported"):
        read_image(p)


def test_corrupt_tiff(tmp_path):
    p = tmp_path / "c.tif"
    p.write_bytes(b"II*\x00" + b"\xff" * 50)
    with pytest.raises(ImageReadError, match="TIFF"):
        read_image(p)


def test_palette_and_bmp(tmp_path):
    p = tmp_path / "p.bmp"
    Image.fromarray(np.full((10, 10, 3), 9, np.uint8)).convert("P").save(p)
    assert read_image(p).pixels.shape == (10, 10, 3)


def test_missing_folder_and_tiny(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    p = tmp_path / "t.png"
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(p)
    with pytest.raises(ImageReadError, match="too small"):
        read_image(p)


def test_error_is_picklable():
    import pickle

    e = pickle.loads(pickle.dumps(ImageReadError("x.png", "why")))
    assert str(e) == "x.png: why" and e.path == "x.png"


def test_expand_inputs_keeps_paths_as_given(tmp_path, rgb_png):
    a = rgb_png("a.png")
    (tmp_path / "sub").mkdir()
    b = rgb_png("sub/b.jpg")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "link.png").symlink_to(a)
    found = expand_inputs([str(tmp_path)])
    assert str(a) in found and str(b) in found and str(tmp_path / "link.png") in found
    assert not any(f.endswith(".txt") for f in found)
    assert expand_inputs([str(tmp_path / "*.png")]) == sorted([str(a), str(tmp_path / "link.png")])
    assert expand_inputs(["missing*.png"]) == ["missing*.png"]

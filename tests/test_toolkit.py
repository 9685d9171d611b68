"""`fal.toolkit` files and images as app code builds them (no cluster needed)."""

import base64

from PIL import Image as PILImage

from tenantserve.adapters.fal.sdk.toolkit import File, Image


def test_file_from_bytes_and_path(tmp_path) -> None:
    made = File.from_bytes(b"hello", content_type="text/plain", file_name="hi.txt")
    assert (made.content_type, made.file_name, made.file_size) == ("text/plain", "hi.txt", 5)
    assert made.as_bytes() == b"hello"
    path = tmp_path / "weights.json"
    path.write_text('{"a": 1}')
    loaded = File.from_path(path)
    assert (loaded.file_name, loaded.content_type, loaded.file_size) == ("weights.json", "application/json", 8)
    assert loaded.save(tmp_path / "copy.json").read_text() == '{"a": 1}'


def test_image_from_pil_and_bytes() -> None:
    image = Image.from_pil(PILImage.new("RGB", (12, 7), "#00ff00"))
    assert (image.width, image.height, image.content_type, image.file_name) == (12, 7, "image/png", "image.png")
    assert image.url.startswith("data:image/png;base64,")
    assert image.to_pil().getpixel((0, 0)) == (0, 255, 0)
    jpeg = Image.from_pil(PILImage.new("RGB", (4, 4)), format="jpeg")
    assert jpeg.content_type == "image/jpeg"
    again = Image.from_bytes(base64.b64decode(image.url.split(",", 1)[1]), content_type="image/png")
    assert (again.width, again.height) == (12, 7)
    assert set(image.model_dump()) == {"url", "content_type", "file_name", "file_size", "width", "height"}

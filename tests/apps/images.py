import fal
from fal.toolkit import File, Image, download_file
from pydantic import BaseModel


class Paint(BaseModel):
    width: int = 8
    height: int = 6
    color: str = "#ff0000"


class Painted(BaseModel):
    image: Image


class Picture(BaseModel):
    image: Image


class Seen(BaseModel):
    width: int
    height: int
    color: list[int]


class Document(BaseModel):
    file: File


class Painter(fal.App, keep_alive=60):
    machine_type = "XS"

    @fal.endpoint("/")
    def paint(self, request: Paint) -> Painted:
        from PIL import Image as PILImage

        return Painted(image=Image.from_pil(PILImage.new("RGB", (request.width, request.height), request.color)))

    @fal.endpoint("/in-memory")
    def paint_in_memory(self, request: Paint) -> Painted:
        from PIL import Image as PILImage

        picture = PILImage.new("RGB", (request.width, request.height), request.color)
        return Painted(image=Image.from_pil(picture, repository="in_memory"))

    @fal.endpoint("/look")
    def look(self, request: Picture) -> Seen:
        picture = request.image.to_pil().convert("RGB")
        return Seen(width=picture.width, height=picture.height, color=list(picture.getpixel((0, 0))))

    @fal.endpoint("/upper")
    def upper(self, request: Document) -> Document:
        text = download_file(request.file.url, "/tmp/inputs").read_text().upper()  # fal's File inputs hold a URL
        return Document(file=File.from_bytes(text.encode(), content_type="text/plain", file_name="upper.txt"))

"""Each input has an output file of its own: keys that would share an output name are rejected, not overwritten."""

from pathlib import Path

from PIL import Image

from steps.io.storage import open_storage
from steps.preprocess.shard import preprocess_shard


def test_keys_that_would_share_an_output_name_are_reported_not_overwritten(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("cat.jpg", "red"), ("cat.png", "blue"), ("IMG_1.v1.jpg", "red"), ("IMG_1.v2.jpg", "blue")):
        Image.new("RGB", (64, 48), colour).save(images / name)
    keys = sorted(p.name for p in images.iterdir())
    outcome = preprocess_shard(
        name="all",
        keys=keys,
        source=open_storage(str(images)),
        target=open_storage(str(tmp_path / "out")),
        size=32,
        threads=2,
    )
    rows = {r["key"]: r for r in outcome.manifest.to_pylist()}
    assert rows["cat.png"]["status"] == "rejected"
    assert rows["cat.png"]["reason"] == "output name resized/cat.jpg is taken by cat.jpg; rename one of the two"
    assert rows["cat.jpg"]["status"] == rows["IMG_1.v1.jpg"]["status"] == rows["IMG_1.v2.jpg"]["status"] == "ok"
    assert sorted(p.name for p in (tmp_path / "out" / "resized").iterdir()) == [
        "IMG_1.v1.jpg",
        "IMG_1.v2.jpg",
        "cat.jpg",
    ]
    assert Image.open(tmp_path / "out" / "resized" / "cat.jpg").getpixel((5, 5))[0] > 200  # still the red cat.jpg

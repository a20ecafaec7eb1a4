"""The user's own model (``python:``): the README example end to end through a shard, typed
columns from the probe, one-line errors in start, and user bugs that are not retried."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.errors import ConfigError, UserCodeError
from steps.inference.predictions import describe, load_table
from steps.inference.shard import infer_shard
from steps.inference.tasks import CallableTask, load_task
from steps.io.local_storage import LocalStorage
from steps.planning.inputs import list_inputs
from steps.spot import is_transient
from tests.support.flows import REPO


def readme_model(directory: Path) -> Path:
    """The README's "Bring your own model" example, exactly as written there."""
    code = re.search(r"```python\n(# my_model\.py\n.*?)```", (REPO / "README.md").read_text(), re.S)
    assert code, "README has no my_model.py example"
    path = directory / "my_model.py"
    path.write_text(code.group(1))
    return path


def model_file(directory: Path, body: str, name: str = "model.py") -> str:
    """A model file of ``body`` (a class ``Model`` with ``__call__``), as ``python:<file>:build``."""
    path = directory / name
    path.write_text("import torch\n\n" + textwrap.dedent(body) + "\n\ndef build(device):\n    return Model()\n")
    return f"python:{path}:build"


def run_shard(sample_dir: Path, out: Path, task: CallableTask, chunk_size: int = 16) -> list[str]:
    keys = list_inputs(LocalStorage(sample_dir))
    infer_shard(
        name="all",
        keys=keys,
        source=LocalStorage(sample_dir),
        target=LocalStorage(out),
        task=task,
        batch_size=8,
        chunk_size=chunk_size,
        threads=4,
        workers=2,
        prefetch_batches=2,
    )
    return keys


def test_the_readme_model_writes_typed_columns_for_every_key(sample_dir: Path, tmp_path: Path) -> None:
    spec = f"python:{readme_model(tmp_path)}:build"
    task = load_task(spec, "classify", top_k=5, min_score=0.5)
    assert isinstance(task, CallableTask)
    assert task.schema.field("rgb_mean").type == pa.list_(pa.float32(), 3)
    assert task.schema.field("brightness").type == pa.float32()

    keys = run_shard(sample_dir, tmp_path / "out", task)
    table = load_table(str(tmp_path / "out"))
    assert sorted(table.column("key").to_pylist()) == sorted(keys)  # every key exactly once
    part = pq.read_table(next((tmp_path / "out" / "predictions" / "all").glob("part-*.parquet")))
    assert part.schema.names == ["key", "status", "reason", "rgb_mean", "brightness"]
    assert part.schema.field("rgb_mean").type == pa.list_(pa.float32(), 3)

    rows = table.to_pandas().set_index("key")
    ok, rejected = rows[rows["status"] == "ok"], rows[rows["status"] == "rejected"]
    assert (len(ok), len(rejected)) == (51, 3)  # the sample data's 3 bad files
    assert rejected["brightness"].isna().all() and rejected["rgb_mean"].isna().all()
    assert (rejected["reason"] != "").all()
    # The model saw 0..1 pixels: brightness is the mean of the colour means.
    means = np.stack(ok["rgb_mean"].to_numpy())
    assert ((means >= 0) & (means <= 1)).all() and means.std() > 0.01
    np.testing.assert_allclose(ok["brightness"].to_numpy(), means.mean(axis=1), rtol=1e-4, atol=1e-5)
    text = describe(rows.reset_index(), None, table.schema)
    assert "columns: rgb_mean fixed_size_list<element: float>[3], brightness float" in text


def test_every_output_shape_becomes_its_column_type(tmp_path: Path) -> None:
    spec = model_file(
        tmp_path,
        """
        class Model:
            input_size = 16
            resize = "pad"

            def __call__(self, pixels, meta):
                n = pixels.shape[0]
                return {
                    "half": torch.zeros((n, 4), dtype=torch.float16),
                    "count": torch.arange(n),
                    "flag": torch.ones(n, dtype=torch.bool),
                    "boxes": [torch.zeros((2, 4)) for _ in range(n)],
                    "scores": [torch.zeros(3) for _ in range(n)],
                    "tags": [["a", "b"] for _ in range(n)],
                    "caption": ["x"] * n,
                    "width": [m["width"] for m in meta],
                }
        """,
    )
    schema = load_task(spec, "classify", top_k=1, min_score=0).schema
    assert {f.name: f.type for f in schema} == {
        "key": pa.string(),
        "status": pa.string(),
        "reason": pa.string(),
        "half": pa.list_(pa.float16(), 4),
        "count": pa.int64(),
        "flag": pa.bool_(),
        "boxes": pa.list_(pa.list_(pa.float32(), 4)),
        "scores": pa.list_(pa.float32()),
        "tags": pa.list_(pa.string()),
        "caption": pa.string(),
        "width": pa.int64(),
    }


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ("torch.zeros(1)", "output 'x' of --model 'python:{file}:build': expected a [N] or [N, D] tensor"),
        ("torch.zeros((n, 2, 2))", "got a tensor of shape [2, 2, 2]; flatten it to [N, D]"),
        ("[torch.zeros(2)] * (n + 1)", "got a list of 3 items"),
        ("{'a': 1}", "output 'x' of --model 'python:{file}:build': expected a [N] or [N, D] tensor or a list of N"),
        ("[torch.zeros((2, 4)), torch.zeros((2, 5))]", "all [k] or all [k, D] with the same D"),
        ("[[] for _ in range(n)]", "got only empty lists"),
    ],
)
def test_a_wrong_return_fails_at_load_in_one_line_naming_file_and_output(
    tmp_path: Path, returns: str, message: str
) -> None:
    spec = model_file(
        tmp_path,
        f"""
        class Model:
            def __call__(self, pixels, meta):
                n = pixels.shape[0]
                return {{"x": {returns}}}
        """,
    )
    with pytest.raises(ConfigError) as raised:
        load_task(spec, "classify", top_k=1, min_score=0)
    text = str(raised.value)
    assert message.format(file=tmp_path / "model.py") in text and "\n" not in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise ImportError('no module named cv3')", "importing the file to work; it raised ImportError"),
        ("class Model:\n    def __call__(self, p, m):\n        raise ValueError('boom')", "it raised ValueError: boom"),
        ("class Model:\n    resize = 'squash'\n    def __call__(self, p, m):\n        return {}", "resize of --model"),
        (
            "class Model:\n    mean = (0.5, 0.5, 0.5)\n    def __call__(self, p, m):\n        return {}",
            "both or neither",
        ),
    ],
)
def test_a_broken_model_file_fails_at_load_in_one_line(tmp_path: Path, body: str, message: str) -> None:
    spec = model_file(tmp_path, body)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_task(spec, "classify", top_k=1, min_score=0)


def test_a_missing_file_or_factory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected an existing Python file"):
        load_task(f"python:{tmp_path}/nope.py:build", "classify", top_k=1, min_score=0)
    spec = model_file(tmp_path, "class Model:\n    pass")
    with pytest.raises(ConfigError, match=re.escape("a function make(device)")):
        load_task(spec.replace(":build", ":make"), "classify", top_k=1, min_score=0)


MOODY = """
class Model:
    input_size = 8

    def __call__(self, pixels, meta):
        n = pixels.shape[0]
        if pixels.mean() > 0:  # real images, not the blank probe
            {failure}
        return {{"v": torch.zeros((n, 8))}}
"""


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("raise TimeoutError('the user code timed out')", "the model raised TimeoutError: the user code timed out"),
        ("return {'v': torch.zeros((n, 7))}", "output 'v' of --model"),
    ],
)
def test_a_bug_inside_a_shard_is_a_user_code_error_never_retried(
    sample_dir: Path, tmp_path: Path, failure: str, message: str
) -> None:
    task = load_task(model_file(tmp_path, MOODY.format(failure=failure)), "classify", top_k=1, min_score=0)
    with pytest.raises(UserCodeError, match=re.escape(message)) as raised:
        run_shard(sample_dir, tmp_path / "out", task)
    assert not is_transient(raised.value)  # not even the TimeoutError a spot-loss policy would retry


def test_meta_maps_input_pixels_back_to_the_original(tmp_path: Path) -> None:
    from steps.imaging.placement import place

    for resize in ("crop", "pad", "stretch"):
        placement = place(640, 480, 64, resize, 1.0)
        record = placement.record()
        corner_x = 640 * record["scale_x"] + record["offset_x"]
        corner_y = 480 * record["scale_y"] + record["offset_y"]
        expected = {"crop": (75, 64), "pad": (64, 56), "stretch": (64, 64)}[resize]
        assert (round(corner_x), round(corner_y)) == expected, resize


def test_an_importable_module_works_like_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "team_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    readme_model(package)  # team_models/my_model.py
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task("python:team_models.my_model:build", "classify", top_k=1, min_score=0)
    assert [c.name for c in task.columns] == ["rgb_mean", "brightness"]
    with pytest.raises(ConfigError, match="no --task with a python: model"):
        load_task("python:team_models.my_model:build", "embed", top_k=1, min_score=0)
    with pytest.raises(ConfigError, match=re.escape("importing module team_models.nothing to work")):
        load_task("python:team_models.nothing:build", "classify", top_k=1, min_score=0)


def test_a_half_precision_batch_is_stored_as_the_probes_type() -> None:
    import torch

    from steps.inference.outputs import batch_table, probe_columns, schema_of

    columns = probe_columns({"v": torch.zeros((2, 3)), "s": torch.zeros(2)}, 2, "python:m.py:build")
    schema = schema_of(columns)
    half = {"v": torch.ones((2, 3), dtype=torch.float16), "s": torch.ones(2, dtype=torch.bfloat16)}
    table = batch_table(half, columns, ["a", "b"], schema, "python:m.py:build")  # as autocast on a T4 returns
    assert table.schema == schema and table.column("v").to_pylist() == [[1.0] * 3] * 2
    wrong = "expected fixed_size_list<item: float>[3] as on the probe; got fixed_size_list<item: int64>[3]"
    with pytest.raises(UserCodeError, match=re.escape(wrong)):
        batch_table({"v": torch.ones((2, 3), dtype=torch.int64), "s": torch.ones(2)}, columns, ["a", "b"], schema, "m")

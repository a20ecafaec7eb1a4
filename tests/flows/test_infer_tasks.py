"""Real InferFlow runs beyond a classifier: a user's ``python:`` model that raises fails its task
once, with the user's traceback, and embeddings and detections from random-init torchvision weights."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from steps.inference.predictions import load_predictions
from steps.io.local_storage import LocalStorage
from steps.planning.inputs import list_inputs
from tests.support.flows import SPOT_BATCH, card_text, run_flow
from tests.support.inference import infer_args

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


BUGGY_MODEL = """
import torch

class Buggy:
    input_size = 16

    def __call__(self, pixels, meta):
        if pixels.mean() > 0:  # a real image, not start's blank probe
            raise ZeroDivisionError("bug in the user's model")
        return {"v": pixels.mean(dim=(1, 2, 3))}

def build(device):
    return Buggy()
"""


def test_an_exception_in_the_users_model_fails_the_task_once_with_its_traceback(
    sample_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "buggy.py"
    model.write_text(BUGGY_MODEL)
    result = run_flow(
        "infer",
        tmp_path / "work",
        *infer_args(sample_dir, tmp_path / "out", f"python:{model}:build"),
    )
    assert not result.ok
    assert "ZeroDivisionError: bug in the user's model" in result.output
    assert f'File "{model}", line 9, in __call__' in result.output  # the user's traceback
    assert "not retrying" in result.output
    assert "retry_count 1" not in result.output and "(retry 1)" not in result.output
    task = result.client_run()["process_shard"].task
    assert task.current_attempt == 0  # failed once, not retried as if it were a spot loss


@pytest.mark.parametrize(
    ("task", "arch", "card_section"),
    [
        # Embedding end to end in process (its card sections, `spot-batch similar`): the unit test
        # test_embed_writes_unit_float16_vectors...; detect is the default run's flow representative.
        pytest.param("embed", "mobilenet_v3_small", "Nearest neighbours of", marks=pytest.mark.slow),
        ("detect", "ssdlite320_mobilenet_v3_large", "Detections by label"),
    ],
)
def test_embed_and_detect_with_random_init_torchvision_weights(
    sample_dir: Path, tmp_path: Path, task: str, arch: str, card_section: str
) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    extra = {"weights_backbone": None} if task == "detect" else {}
    weights = tmp_path / f"{arch}.pth"
    torch.save(torchvision.models.get_model(arch, weights=None, **extra).state_dict(), weights)
    output = tmp_path / "out"
    result = run_flow(
        "infer",
        tmp_path / "work",
        *infer_args(sample_dir, output, f"torchvision:{arch}:{weights}", "--task", task, "--min-score", "0.05"),
    )
    assert result.ok, result.output[-3000:]
    predictions = load_predictions(str(output))
    assert list(predictions["key"]) == sorted(list_inputs(LocalStorage(sample_dir)))
    assert (predictions["status"] == "ok").sum() == 51
    run = result.client_run()
    assert run.data.model["type"] == task
    html = card_text("infer", tmp_path / "work", f"{run.id}/join")
    assert card_section in html
    if task == "embed":
        assert run.data.model["outputs"]["embedding"] == "fixed_size_list<item: halffloat>[1024]"
        key = predictions.loc[predictions["status"] == "ok", "key"].iloc[0]
        shown = subprocess.run(
            [SPOT_BATCH, "similar", str(output), "--key", key, "--k", "3"], capture_output=True, text=True, check=True
        )
        assert len(shown.stdout.splitlines()) == 3
    else:
        assert run.data.model["outputs"]["boxes"] == "list<item: fixed_size_list<item: float>[4]>"
        boxes = [b for row in predictions.loc[predictions["status"] == "ok", "boxes"] for b in row]
        assert all(0 <= b[0] <= b[2] and 0 <= b[1] <= b[3] for b in boxes)

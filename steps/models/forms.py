"""The forms ``--model`` accepts, in words: torch-free, for the flow's help text at import."""

MODEL_FORMS = (
    "a TrainFlow model URI, a TorchScript file, torchvision:<arch>:<weights file>, hf:<checkpoint dir>, "
    "timm:<arch>:<checkpoint>, open_clip:<arch>:<checkpoint> or python:<file.py>:<factory>"
)

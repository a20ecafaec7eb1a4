"""The forms ``--model`` accepts, in words: torch-free, for the flow's help text at import."""

MODEL_FORMS = "a TrainFlow model URI, a TorchScript file, or torchvision:<arch>:<weights file>"

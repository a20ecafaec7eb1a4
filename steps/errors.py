"""Errors that carry a one-line, actionable message."""


class ConfigError(ValueError):
    """Bad configuration: name the value, what was expected, and the fix, in one line.

    Raised before any work fans out. It is deterministic, so retrying it is pointless.
    """

    def __init__(self, what: str, value: object, expected: str, fix: str) -> None:
        super().__init__(f"{what} {value!r}: expected {expected}; {fix}")


def not_tensors(what: str, path: str) -> ConfigError:
    """For a torch file that ``torch.load(weights_only=True)`` refuses: it pickles objects (a whole
    model, custom classes), not only tensors. Never load it unsafely; ask for a state dict."""
    return ConfigError(
        what,
        path,
        "a file of tensors (a state dict), not a pickled model or other objects",
        "save it with torch.save(model.state_dict(), PATH)",
    )


class UserCodeError(Exception):
    """The user's model code raised or returned what it promised not to: a bug, never retried as
    if it were a spot loss. Raised ``from`` the user's exception, so its traceback is printed."""


class LeaseConflict(Exception):
    """Another run holds (or took) the output's lease (``steps.output.lease``): not bad
    configuration, and not transient either; the message says which run and what to do."""


class RejectedInput(Exception):
    """One input item cannot be processed (bad bytes, unreadable object): report it, go on."""


class SpotInterruption(Exception):
    """Raised after in-flight work is committed because the instance is going away.

    Transient by nature: the task exits non-zero so Metaflow's @retry reschedules it, and the
    retry resumes from what was committed.
    """

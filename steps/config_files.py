"""Where the project's configuration files live: ``config/`` beside ``steps/``, in a checkout and in
Metaflow's code package alike (the flows package it with ``@package_sources``)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def config_file(name: str) -> str:
    """The path of ``config/<name>`` as a string, as Metaflow ``Config`` defaults take it."""
    return str(CONFIG_DIR / name)

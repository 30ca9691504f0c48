"""Errors of input, flags, output folder (or its run state) or checkpoint: the CLI prints them in one line and exits with 2."""

from __future__ import annotations

from .frames import InputError
from .model.config import ConfigError
from .model.loading import CheckpointError
from .options import OptionsError
from .run_state import SettingsMismatch
from .storage import OutputError


# Every exception class that means "the user asked for something that cannot work".
USAGE_ERRORS: tuple[type[Exception], ...] = (
    InputError, CheckpointError, ConfigError, OptionsError, OutputError, SettingsMismatch,
)

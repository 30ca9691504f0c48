"""What a test runs in a worker process; a module of its own, since unpickling a function imports its module and
the test modules import torch."""

from __future__ import annotations

import sys


def torch_is_loaded(*unpickled: object) -> bool:
    """Run in a worker after it unpickled what ``finish_window`` gets."""
    return "torch" in sys.modules

"""What a test runs in a worker process; a module of its own, since unpickling a function imports its module and
the test modules import torch."""

from __future__ import annotations

import sys


def torch_is_loaded(*unpickled: object) -> bool:
    """Run in a worker after it unpickled what ``finish_window`` gets."""
    return "torch" in sys.modules


def threads_while_finishing() -> dict[str, int]:
    """Run in a worker: how many threads OpenCV and each BLAS/OpenMP pool may use while a window is finished."""
    import cv2
    import threadpoolctl

    from vae_pipeline.finish import single_threaded_opencv

    with single_threaded_opencv():
        pools = {f"{pool['internal_api']} {pool['filepath']}": pool["num_threads"]
                 for pool in threadpoolctl.threadpool_info()}
        return {"opencv": cv2.getNumThreads(), **pools}

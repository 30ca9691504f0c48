"""Keep native libraries' logs and crash reports off the terminal unless asked for (``-v``).

pycolmap's import starts glog, which logs solver chatter to stderr (its own and Ceres', such as "Linear solver
failure" or "Bundle adjustment failed" for a window that cannot be solved) and installs a failure handler that
prints a stack dump on SIGTERM and on crash signals. A worker that the pool stops, or the main process that a
scheduler stops, must simply stop; a worker that crashes is reported as a failed window with its reason, and the
dump is only noise for users (``-v`` keeps it for debugging crashes). OpenCV's FFmpeg backend prints its own
complaints about files it cannot read (``moov atom not found``); the pipeline reports those inputs itself, naming
the file.
"""

from __future__ import annotations

import os
import signal

# Signals glog's failure handler takes over.
_CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGBUS)
# glog's levels are INFO 0, WARNING 1, ERROR 2, FATAL 3. Quiet keeps only FATAL (the process is about to end):
# what pycolmap and Ceres log as errors are windows the solver gives up on, which the pipeline records itself, with
# the window and the reason, in the manifest.
_GLOG_QUIET = 3
_FFMPEG_QUIET = -8  # AV_LOG_QUIET


def quiet_native_libraries(verbose: bool = False) -> None:
    """Import pycolmap with glog's logging and failure handlers set for this process, and quiet OpenCV's FFmpeg.

    Must run before a process installs its own SIGTERM handler (the import replaces it) and before it opens a
    video (OpenCV reads its FFmpeg log level then).
    """
    if not verbose:
        # glog reads its flags from the environment when the library loads, so this covers what the import logs.
        os.environ.setdefault("GLOG_minloglevel", str(_GLOG_QUIET))
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(_FFMPEG_QUIET))
    import pycolmap

    if not verbose:
        pycolmap.logging.minloglevel = _GLOG_QUIET
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not verbose:
        for signum in _CRASH_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)

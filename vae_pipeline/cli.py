"""Command line: flags (derived from ``PipelineOptions``' declarations), run, and one-line messages.

Exit codes: 0 every window written (or dropped by ``--keep``), 1 some windows or sequences failed, 2 bad input,
flags, output folder or checkpoint (found before the run starts) or an output folder whose storage fails during
the run (a full disk: finished windows are kept), 130 after Ctrl-C, 143 after SIGTERM.

Only the standard library is imported up here: Ctrl-C may come while the heavy imports run, and ``main`` must
be there to turn it into one line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_WINDOWS_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM

log = logging.getLogger("vae_pipeline")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler ending the job): stops the run the way Ctrl-C does, with its own exit code."""


def build_parser() -> argparse.ArgumentParser:
    """The flags; the program's name in usage lines is the command as it was started (``vae-pipeline`` or
    ``vae_data_pipeline_batch.py``)."""
    from . import __version__, declare
    from .options import GROUP_TITLES, PipelineOptions

    parser = argparse.ArgumentParser(
        description="Annotate sequences of video frames with 3D geometry: VGGT on sliding windows of frames, "
        "batched on the GPU, then a COLMAP model per window (optionally bundle-adjusted).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    declare.add_flags(parser, PipelineOptions, GROUP_TITLES)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="Log more (debug messages, and native libraries' logs and crash reports).")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="Log only warnings and errors; no progress bar.")
    parser.add_argument("--version", action="version", version=f"vae_pipeline {__version__}")
    return parser


def options_from_args(args: argparse.Namespace):
    from . import declare
    from .options import PipelineOptions

    return declare.from_flags(PipelineOptions, vars(args))


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _interruption(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind ``exc``: a native library's import wraps one that lands inside it."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except BaseException as exc:
        interruption = _interruption(exc)
        if interruption is None:
            raise
        terminated = isinstance(interruption, Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"{what}: finished windows are kept; rerun the same command to continue", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    from .native import quiet_native_libraries

    # pycolmap's import installs glog's handlers for SIGTERM and crash signals; ours must come (again) after it.
    quiet_native_libraries(verbose=args.verbose)
    signal.signal(signal.SIGTERM, _terminate)
    from .errors import USAGE_ERRORS
    from .pipeline import run_pipeline

    try:
        options = options_from_args(args)
        options.validate()
        summary = run_pipeline(options, progress=not args.quiet)
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if options.report:
        write_run_report(options.output_dir)
    return EXIT_OK if summary.run_failed == 0 else EXIT_WINDOWS_FAILED


def write_run_report(output_dir: Path) -> None:
    """``--report``: the run report of the output folder. The windows are written whatever happens to it, so a
    report that cannot be written is a warning, not the run's failure."""
    from .report import ReportInputError, write_report  # matplotlib, imported only when asked for

    try:
        log.info("report: %s", write_report(output_dir))
    except (ReportInputError, OSError) as exc:
        log.warning("the report could not be written: %s", exc)


if __name__ == "__main__":
    sys.exit(main())

"""What COLMAP's text model format can hold: image names without whitespace.

Its readers (COLMAP's own, pycolmap's, nerfstudio's and gsplat's parsers) split each line of ``images.txt`` at
whitespace, so a frame named ``frame 01.png`` reads back as ``frame``, the name of no file; the binary format
stores names whole. A run asked for text models refuses such names before it starts rather than write text
models that point at other files.
"""

from __future__ import annotations

from ..frames import Sequence


def text_model_problem(sequences: list[Sequence]) -> str | None:
    """Why ``--colmap-text`` cannot be honoured for ``sequences`` (the first frame whose name has whitespace, and
    what to do), or None when every name fits."""
    unfit = [frame for sequence in sequences for frame in sequence.frames if any(c.isspace() for c in frame.name)]
    if not unfit:
        return None
    first = unfit[0]
    cut = first.name.split()[0] if first.name.split() else ""
    more = f" (and {len(unfit) - 1} more frames)" if len(unfit) > 1 else ""
    return (f"--colmap-text cannot keep the name of {first.path}{more}: COLMAP's text format ends an image name at "
            f"the first whitespace, so its readers would look for {cut!r}; rename the files without spaces or leave "
            "out --colmap-text (the binary model keeps every name)")

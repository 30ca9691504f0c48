"""Write testdata/: small synthetic sequences with exact ground truth, rendered by vae_pipeline.synthetic.

Run from the repository root: python scripts/make_testdata.py. tests/test_synthetic.py re-renders the sequences
and compares them with the files on disk, so testdata/ only changes through this script.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from vae_pipeline.synthetic import render_scene, write_scene

# Folder name -> render_scene keyword arguments. The tests read this table, keep it the single source.
SEQUENCES: dict[str, dict] = {
    "scene_arc": dict(num_frames=12, width=224, height=168, seed=0, trajectory="arc"),
    "scene_forward": dict(num_frames=10, width=256, height=144, seed=1, trajectory="forward"),
}

README = """# testdata

Synthetic sequences with exact ground truth, rendered by `vae_pipeline/synthetic.py` (NumPy ray casting of a
textured room with boxes, spheres and a slanted panel; Lambertian, fixed light, 2x2 supersampled colour).

| folder | frames | size | camera path | seed |
|---|---|---|---|---|
{rows}

Each folder has the ground-truth layout the evaluation reads (`docs/formats.md`, "Ground truth"):
- `images/NNNN.png`: RGB frames in capture order.
- `gt/poses.txt`: `image_name qw qx qy qz tx ty tz`, COLMAP convention: world-to-camera, x_cam = R(q) x_world + t,
  OpenCV camera axes (x right, y down, z forward). World z is up, the floor is z = 0, units are arbitrary.
- `gt/intrinsics.txt`: `width height fx fy cx cy`, pinhole, one camera for all frames, COLMAP pixel-centre
  convention (centre of the first pixel at (0.5, 0.5)); the principal point is the image centre, so cx = W / 2,
  cy = H / 2. In OpenCV convention (what `vae_pipeline.synthetic.read_ground_truth` returns) subtract 0.5.
- `gt/depth.npz`: `depth` float16 [S, H, W] z-depth along the optical axis at each pixel centre (> 0 everywhere),
  `names` [S] the image names in the same order.

Regenerate with `python scripts/make_testdata.py` (from the repository root). Do not edit by hand:
`tests/test_synthetic.py` re-renders every sequence and compares it with these files.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "testdata")
    args = parser.parse_args()
    rows = []
    for folder_name, settings in SEQUENCES.items():
        folder = args.output / folder_name
        if folder.exists():
            shutil.rmtree(folder)
        write_scene(render_scene(**settings), folder)
        rows.append(
            f"| `{folder_name}/` | {settings['num_frames']} | {settings['width']}x{settings['height']} "
            f"| {settings['trajectory']} | {settings['seed']} |"
        )
        print(f"wrote {folder}")
    (args.output / "README.md").write_text(README.format(rows="\n".join(rows)))


if __name__ == "__main__":
    main()

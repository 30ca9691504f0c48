#!/usr/bin/env python3
"""Annotate video frames with 3D geometry: ``python vae_data_pipeline_batch.py --input-dir FRAMES --output-dir OUT``."""

import sys

from vae_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())

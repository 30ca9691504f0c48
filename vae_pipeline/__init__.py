"""vae_pipeline: annotate sequences of video frames with 3D geometry for training generative models."""

__version__ = "0.1.0"

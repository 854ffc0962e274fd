"""erlnet: speech audio + a style clip -> a photorealistic talking-head video."""

__version__ = "0.1.0"

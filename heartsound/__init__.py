"""heartsound: heart-sound recordings -> a trained, evaluated, reusable classifier."""

__version__ = "0.1.0"

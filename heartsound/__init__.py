"""heartsound: heart-sound recordings -> a trained, evaluated, reusable classifier."""

__version__ = "0.1.0"

__all__ = ["predict"]


def __getattr__(name: str):
    # heartsound.predict is loaded on first use (PEP 562): `import heartsound` stays light, and the pipeline's
    # stages, which import heartsound.<module>, never run the prediction code.
    if name == "predict":
        from heartsound.prediction import predict

        return predict
    raise AttributeError(f"module 'heartsound' has no attribute {name!r}")

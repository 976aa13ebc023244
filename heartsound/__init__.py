"""heartsound: heart-sound recordings -> a trained, evaluated, reusable classifier."""

__version__ = "0.1.0"

# heartsound.predict is the function, not the submodule of the same name (this binding runs after
# the submodule import and wins). The submodule imports nothing heavy until predict() is called,
# so `import heartsound` stays fast; reach the module itself with `from heartsound.predict import ...`.
from heartsound.predict import predict  # noqa: E402

__all__ = ["predict"]

"""ser-stream: real-time speech emotion recognition as a stream processor."""

from ser_stream.labels import LABELS

__all__ = ["LABELS", "__version__"]

__version__ = "0.1.0"

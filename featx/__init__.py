"""featx: deep features once, many heads in seconds."""
__version__ = "0.1.0"

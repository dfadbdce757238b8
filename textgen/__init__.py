"""textgen: character-level LSTM text generation."""

__version__ = "0.1.0"

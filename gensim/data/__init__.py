"""Data modules: the live stream of simulation steps as Lightning data."""

from gensim.data.streaming import BufferStream, StreamingDataModule, ValidationStore

__all__ = ["BufferStream", "StreamingDataModule", "ValidationStore"]

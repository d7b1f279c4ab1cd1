"""Checkpoints on disk and where sources come from: safetensors layouts, streaming clones, output directories, the Hub.

Imports ``core`` and ``specs`` only.
"""

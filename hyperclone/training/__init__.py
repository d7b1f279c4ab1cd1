"""Training races: settings, data, contestants, the loop, run directories, results and speed-ups.

Imports ``io``, ``core`` and ``specs`` only.
"""

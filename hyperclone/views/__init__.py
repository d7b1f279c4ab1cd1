"""Read-only facts and figures (plots, heatmaps, comparisons) and downstream evaluation.

Imports the layers below (``race``, ``io``, ``core``, ``specs``).
"""

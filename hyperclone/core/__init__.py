"""The engine: growth settings, the tensor rules, model-level cloning, logit equivalence, symmetry, memory arithmetic.

Imports only ``hyperclone.specs`` and itself (the bottom layer, beside ``specs``).
"""

"""The guided lesson, the notebooks' exercise checks and the classroom server's rules.

Imports the layers below (``views``, ``race``, ``io``, ``core``, ``specs``).
"""

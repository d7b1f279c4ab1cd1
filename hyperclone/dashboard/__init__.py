"""The Streamlit dashboard's pages and the few helpers they share (``app.py`` is its entry point)."""

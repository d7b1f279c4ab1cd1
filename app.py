"""HyperClone dashboard: ``streamlit run app.py`` (or ``hyperclone serve``).

The pages live in the package (``hyperclone/dashboard/``), so an installed wheel serves the same dashboard.
"""

from hyperclone.dashboard.explorer_page import main

main()

"""HyperClone dashboard: the script ``hyperclone serve`` starts.

The same two lines as the checkout's ``app.py``, inside the package, so an installed wheel serves the dashboard.
"""

from hyperclone.dashboard.explorer_page import main

main()

"""The tutorial notebooks, for a checkout and for an installed wheel alike.

A checkout keeps them in ``notebooks/`` beside the package; a wheel installs them as data files in
``<prefix>/share/hyperclone/notebooks`` (the environment's prefix, or the user base for ``pip install
--user``). ``copy_tutorials(DIR)`` copies them into a new folder, to open in Jupyter.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
import sysconfig
from pathlib import Path

from hyperclone.core.errors import HyperCloneError
from hyperclone.io.atomic import atomic_dir, move_into_place

DATA_PATH = ("share", "hyperclone", "notebooks")  # where pyproject.toml's data-files put them under a prefix


def _places() -> list[Path]:
    """Where the notebooks may be, first match wins: the checkout, the environment, the user base."""
    checkout = Path(__file__).resolve().parent.parent.parent / "notebooks"
    prefixes = [Path(sysconfig.get_path("data")), Path(sys.prefix), Path(site.getuserbase())]
    return [checkout, *(prefix.joinpath(*DATA_PATH) for prefix in dict.fromkeys(prefixes))]


def tutorial_notebooks() -> list[Path]:
    """The tutorial notebooks (``*.ipynb``), in their order; one clear line when none is found."""
    for place in _places():
        found = sorted(place.glob("*.ipynb"))
        if found:
            return found
    raise HyperCloneError("the tutorial notebooks are not installed (looked in "
                          + ", ".join(str(p) for p in _places())
                          + "); reinstall HyperClone, or get them from its source repository's notebooks/")


def copy_tutorials(target: str | os.PathLike) -> list[Path]:
    """Copy the tutorial notebooks into the new folder ``target`` (refused if it exists); the copies.

    The folder appears whole or not at all: written under a temporary name beside it, then renamed."""
    target = Path(target).absolute()
    if target.exists() or target.is_symlink():
        raise HyperCloneError(f"{target} already exists; name a new folder for the notebooks (nothing was copied)")
    notebooks = tutorial_notebooks()
    try:
        with atomic_dir(target, publish=move_into_place) as tmp:
            for notebook in notebooks:
                shutil.copyfile(notebook, tmp / notebook.name)
    except FileExistsError:
        raise HyperCloneError(f"{target} appeared while the notebooks were copied; name a new folder "
                              "(nothing was copied)") from None
    except OSError as e:
        raise HyperCloneError(f"cannot copy the notebooks to {target}: {e.strerror or e}") from None
    return [target / notebook.name for notebook in notebooks]

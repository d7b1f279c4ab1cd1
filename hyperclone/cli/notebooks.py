"""``hyperclone notebooks DIR``: copy the tutorial notebooks into a new folder, to open in Jupyter."""

from __future__ import annotations

from pathlib import Path


def add_notebooks_parser(sub) -> None:
    p = sub.add_parser("notebooks", help="copy the tutorial notebooks into a new folder DIR")
    p.add_argument("dir", type=Path, metavar="DIR", help="a folder that does not exist yet")
    p.set_defaults(func=cmd_notebooks)


def cmd_notebooks(args) -> int:
    from hyperclone.teach.tutorials import copy_tutorials

    copied = copy_tutorials(args.dir)
    print(f"copied {len(copied)} tutorial notebooks to {args.dir}:")
    for path in copied:
        print(f"  {path.name}")
    print(f"open them with: jupyter lab {args.dir}  (or jupyter notebook)")
    return 0

"""The explorer's export tab: save the clone (into the page's own folder in a class), zip it."""

from __future__ import annotations

import io
import zipfile
from contextlib import nullcontext
from pathlib import Path

import streamlit as st

from hyperclone.core.errors import HyperCloneError, OutputExistsError
from hyperclone.core.resources import human_bytes
from hyperclone.io.export import provenance, save_clone
from hyperclone.io.sources import resolve_source
from hyperclone.teach.classroom import CLASS_EXPORTS, PAGE_EXPORT_BYTES, PAGE_EXPORTS, PAGE_ZIP_BYTES, page_export
from hyperclone.dashboard.common import is_teacher_page, owner_id, safe_name
from hyperclone.dashboard.sources_panel import (DEFAULT_TEXT, cached_report, CloneKey, get_clone, show_error,
                                                source_of, wide_size)


MAX_ZIP_BYTES = 2**30  # larger checkpoints are copied from disk, not downloaded through the browser


# --------------------------------------------------------------------------- #
# 7. Export
# --------------------------------------------------------------------------- #
def zip_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                zf.write(f, Path(path.name) / f.relative_to(path))
    return buf.getvalue()


def show_export(key: CloneKey) -> None:
    """Save the clone: the teacher (or a local user) to any directory; a student in a class by a name, into
    this page's own folder, within the class's limits."""
    name = f"{safe_name(key.source)}-x{key.growth.factor}-{key.growth.variant}"
    teacher = is_teacher_page()
    c1, c2 = st.columns([4, 1])
    if teacher:
        out = c1.text_input("Save to directory", f"out/{name}", key="export_dir").strip()
    else:
        out = c1.text_input("Export name", name, key="export_name", max_chars=64,
                            help="a name, not a path: letters, digits, '.', '_' or '-'").strip()
        st.caption(f"In a class, your exports go only into this page's own folder ({CLASS_EXPORTS}/<this page>/): "
                   f"at most {PAGE_EXPORTS} of them and {PAGE_EXPORT_BYTES / 2**30:g} GiB; Overwrite replaces one of "
                   "yours, never another page's.")
    overwrite = c2.checkbox("Overwrite", key="export_overwrite", help="replace an earlier HyperClone output")
    if st.button("Save clone", key="export_save", disabled=not out):
        save_export(key, out, overwrite, teacher)
    show_exported()


def save_export(key: CloneKey, out: str, overwrite: bool, teacher: bool) -> None:
    """Save the clone to ``out``: a directory (the teacher's), or a student's export name, checked first."""
    source, tokenizer = source_of(key)
    wide = get_clone(key)
    try:
        with nullcontext(out) if teacher else page_export(owner_id(), out, wide_size(key)[1]) as target:
            text = st.session_state.get("check_text", DEFAULT_TEXT)
            report = cached_report(key, text if tokenizer is not None else "")
            record = provenance(wide.hyperclone_plan, key.source, report, {"dashboard": True})
            origin, where = resolve_source(key.source)  # a source directory is never written into or over
            with st.spinner("Saving…"):
                path = save_clone(wide, target, record, tokenizer, overwrite=overwrite,
                                  src=None if origin == "hub" else where)
        st.session_state.exported = str(path)
    except OutputExistsError as e:
        show_error(HyperCloneError(e.with_control("tick Overwrite")), "saving the clone")
    except Exception as e:  # noqa: BLE001
        show_error(e, "saving the clone")


def show_exported() -> None:
    """The last export of this page: where it is, its files, and a zip of it."""
    exported = st.session_state.get("exported")
    if exported and Path(exported).is_dir():
        path = Path(exported)
        files = sorted(f.name for f in path.iterdir())
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        st.success(f"Saved `{path.resolve()}` ({human_bytes(size)}): {', '.join(files)}", icon=":material/save:")
        if size > (MAX_ZIP_BYTES if is_teacher_page() else PAGE_ZIP_BYTES):
            st.info("Too large to download through the browser; copy the directory instead.")
        else:
            st.download_button("Download as zip", lambda: zip_dir(path), file_name=f"{path.name}.zip",
                               mime="application/zip", key="export_zip", on_click="ignore",
                               icon=":material/download:")  # zipped only when clicked

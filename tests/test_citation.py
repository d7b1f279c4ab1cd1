"""LICENSE is the Apache-2.0 text that pyproject.toml names, and CITATION.cff is a CFF 1.2.0 file citing this
project (its version, its licence) and the paper it implements."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import yaml

from hyperclone.io.model_card import PROJECT_LICENSE
from hyperclone.version import __version__

REPO = Path(__file__).resolve().parent.parent
# md5 of the Apache License 2.0 as the ASF publishes it (https://www.apache.org/licenses/LICENSE-2.0.txt), with
# its appendix's placeholder line; LICENSE differs only by that line filled in.
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"
PLACEHOLDER = "   Copyright [yyyy] [name of copyright owner]"


def _pyproject_license() -> str:
    license_ = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    return license_["text"] if isinstance(license_, dict) else license_


def test_license_is_the_apache_2_text_pyproject_names_with_its_copyright_line_filled_in():
    assert _pyproject_license() == "Apache-2.0" and PROJECT_LICENSE == _pyproject_license().lower()
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    copyright_lines = re.findall(r"^   Copyright \d{4} .+$", text, re.M)
    assert len(copyright_lines) == 1 and PLACEHOLDER not in text
    canonical = text.replace(copyright_lines[0], PLACEHOLDER)
    assert hashlib.md5(canonical.encode()).hexdigest() == APACHE_2_MD5


def test_citation_cff_cites_this_project_and_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "HyperClone" and cff["type"] == "software"
    assert cff["version"] == __version__ and cff["license"] == _pyproject_license()
    assert all(isinstance(author, dict) and ("name" in author or "family-names" in author) for author in cff["authors"])
    paper, = cff["references"]
    assert paper["title"].startswith("Scaling Smart: Accelerating Large Language Model Pre-training")
    assert paper["year"] == 2024 and paper["url"] == "https://arxiv.org/abs/2409.12903"
    names = [author["family-names"] for author in paper["authors"]]
    assert names[:2] == ["Samragh", "Mirzadeh"] and names[-1] == "Farajtabar" and "Alizadeh Vahid" in names

"""``hyperclone serve``'s command: the package's own dashboard script, Streamlit's settings as flags (the same
as the checkout's ``.streamlit/config.toml``), no change of directory, and the LAN address for a class."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path

import pytest
from serving import free_port, serve_args

import hyperclone
import hyperclone.cli.serve as serve
from hyperclone.cli.serve import STREAMLIT_SETTINGS, serve_command

CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


def flag_values(argv: list[str]) -> dict[str, str]:
    """``--section.option value`` pairs of a ``streamlit run`` command line."""
    return {arg[2:]: argv[i + 1] for i, arg in enumerate(argv) if arg.startswith("--")}


def test_the_checkouts_config_toml_says_what_serve_passes():
    config = tomllib.loads(CONFIG.read_text())
    flat = {f"{section}.{key}": value for section, options in config.items() for key, value in options.items()}
    assert flat == STREAMLIT_SETTINGS


@pytest.mark.parametrize("lan, address", [(False, "localhost"), (True, "0.0.0.0")])
def test_serve_passes_every_setting_as_a_flag_and_starts_the_packages_dashboard(lan, address):
    argv, _, _ = serve_command(serve_args(lan=lan, port=9123), {})
    app = Path(argv[-1])
    assert argv[1:4] == ["-m", "streamlit", "run"] and app.name == "serve_app.py" and app.is_file()
    assert app.parent == Path(hyperclone.__file__).resolve().parent / "dashboard"  # from the package, not the checkout
    flags = flag_values(argv[4:-1])
    expected = {key: str(value).lower() if isinstance(value, bool) else str(value)
                for key, value in STREAMLIT_SETTINGS.items()}
    assert flags == {**expected, "server.address": address, "server.port": "9123"}
    assert argv.count("--server.address") == 1


def test_serve_starts_streamlit_in_the_users_directory(monkeypatch, tmp_path):
    started = {}

    def execvpe(file, argv, env):
        started.update(argv=argv, cwd=Path.cwd())
        raise SystemExit(0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execvpe", execvpe)
    with pytest.raises(SystemExit):
        serve.cmd_serve(serve_args(port=free_port()))
    assert started["cwd"] == tmp_path and started["argv"][-1].endswith("serve_app.py")


def test_a_class_is_told_this_machines_lan_address(monkeypatch):
    monkeypatch.setattr(serve, "lan_addresses", lambda: ["192.0.2.7", "198.51.100.3"])
    lines = serve_command(serve_args(lan=True, port=9000, token="given-token"), {})[2]
    assert lines[-1] == ("students open http://192.0.2.7:9000 or http://198.51.100.3:9000; "
                         "the teacher adds ?token=given-token")
    monkeypatch.setattr(serve, "lan_addresses", lambda: [])
    lines = serve_command(serve_args(lan=True, port=9000, token="given-token"), {})[2]
    assert lines[-1] == "students open http://<this machine's address>:9000; the teacher adds ?token=given-token"


def test_lan_addresses_are_reachable_ipv4_addresses():
    found = serve.lan_addresses()
    assert len(found) == len(set(found))
    for address in found:
        ip = ipaddress.ip_address(address)
        assert ip.version == 4 and not ip.is_loopback and not ip.is_unspecified

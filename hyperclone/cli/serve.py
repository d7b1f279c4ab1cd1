"""``hyperclone serve``: start the dashboard, on this machine only unless ``--lan`` asks for a class.

On localhost the dashboard is the full control panel. With ``--lan`` it binds to every network
interface, prints a warning and a teacher token, and runs in classroom mode (``classroom.py``):
races queue one at a time, and starting one needs the token.

The dashboard is the package's own ``dashboard/serve_app.py``, and Streamlit's settings are passed as
flags (``STREAMLIT_SETTINGS``), so an installed wheel serves the same dashboard from any directory; races
are saved in ``./runs`` of the directory it is started from (or ``$HYPERCLONE_RUNS``).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path

from hyperclone.core.errors import HyperCloneError

APP = Path(__file__).resolve().parent.parent / "dashboard" / "serve_app.py"
# Streamlit's settings for the dashboard: the checkout's .streamlit/config.toml says the same (a test checks),
# for `streamlit run app.py`. Flags win over any config.toml, so these hold from any working directory.
STREAMLIT_SETTINGS: dict[str, str | int | bool] = {
    "server.address": "localhost",  # "0.0.0.0" with --lan
    "server.headless": True,
    "server.maxUploadSize": 50,  # MB; the dashboard itself has no uploads
    "server.runOnSave": False,
    "server.fileWatcherType": "none",  # no reloads on edits (and no inotify load)
    "browser.gatherUsageStats": False,  # no telemetry
    "browser.serverAddress": "localhost",
    "client.showErrorDetails": "none",  # no tracebacks in the browser
    "client.toolbarMode": "minimal",
    "logger.level": "warning",
    "global.disableWidgetStateDuplicationWarning": True,  # the explorer keeps tab widgets' state on purpose
    # No full gc.collect() after every script run: with the models loaded one took 0.25 s of the server's one
    # (GIL) core, and a lesson page's board reruns every 3 s, so about 12 students filled it (issue 26).
    "runner.postScriptGC": False,
}


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="start the dashboard (localhost; --lan for a class on one server)")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    p.add_argument("--lan", action="store_true",
                   help="listen on every network interface, for a class: classroom mode with a teacher token")
    p.add_argument("--token", default=None,
                   help="the teacher token in --lan mode: 8 or more letters, digits, . _ ~ or - "
                        "(default: a new one, printed at start-up)")
    p.set_defaults(func=cmd_serve)


def streamlit_flags(settings: dict[str, str | int | bool]) -> list[str]:
    """``--section.option value`` for each setting (booleans as Streamlit writes them: true / false)."""
    flags = []
    for key, value in settings.items():
        flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that others on its network can reach (no loopback), found without
    sending a packet: the source address a UDP socket would use towards a private network, and the host
    name's addresses. Empty when none is found."""
    found = []
    for private in ("10.255.255.255", "172.31.255.255", "192.168.255.255"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((private, 9))  # UDP connect picks a route; nothing is sent
                found.append(probe.getsockname()[0])
        except OSError:
            continue
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    usable = [a for a in found if not (ipaddress.ip_address(a).is_loopback or ipaddress.ip_address(a).is_unspecified)]
    return list(dict.fromkeys(usable))


def students_line(port: int, token: str) -> str:
    """Where students open the dashboard: this machine's LAN address(es), or a placeholder when none is found."""
    where = " or ".join(f"http://{a}:{port}" for a in lan_addresses()) or f"http://<this machine's address>:{port}"
    return f"students open {where}; the teacher adds ?token={token}"


def serve_command(args: argparse.Namespace, environ: dict | None = None) -> tuple[list[str], dict, list[str]]:
    """(argv, environment, lines to print) that start the dashboard as ``args`` ask; nothing is started."""
    from hyperclone.teach.classroom import CLASSROOM_ENV, TOKEN_ENV, check_token, new_token

    if not 1 <= args.port <= 65535:
        raise HyperCloneError(f"--port must be between 1 and 65535, got {args.port}")
    if args.token is not None and not args.lan:
        raise HyperCloneError("--token only applies with --lan (on localhost there is no classroom mode)")
    if not APP.is_file():
        raise HyperCloneError(f"this installation has no dashboard ({APP} is missing); "
                              "reinstall HyperClone (pip install --force-reinstall hyperclone)")
    env = dict(os.environ if environ is None else environ)
    settings = {**STREAMLIT_SETTINGS, "server.address": "0.0.0.0" if args.lan else "localhost",
                "server.port": args.port}
    argv = [sys.executable, "-m", "streamlit", "run", *streamlit_flags(settings), str(APP)]
    if not args.lan:
        env.pop(CLASSROOM_ENV, None)
        env.pop(TOKEN_ENV, None)
        return argv, env, [f"dashboard on http://localhost:{args.port} (this machine only)"]
    token = new_token() if args.token is None else check_token(args.token)
    env[CLASSROOM_ENV], env[TOKEN_ENV] = "1", token
    lines = [
        f"WARNING: the dashboard listens on every network interface (port {args.port}): anyone who can reach "
        "this machine can open it. Use it on a network you trust, and stop it after class (Ctrl-C).",
        f"classroom mode: starting a race or cloning a non-built-in model needs the teacher token: {token}",
        students_line(args.port, token),
    ]
    return argv, env, lines


def check_port_free(address: str, port: int) -> None:
    """Refuse, in one line, a port this machine cannot listen on at ``address`` (in use, or not allowed).

    Binds a socket to every address ``address`` resolves to, as the dashboard's server does (with
    SO_REUSEADDR, so a port left in TIME_WAIT by a stopped dashboard counts as free), and closes it."""
    try:
        addresses = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise HyperCloneError(f"cannot listen on {address}: {e}") from None
    for family, kind, proto, _name, where in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:  # e.g. ::1 on a machine without IPv6: the server skips it too
                    continue
                why = ("is in use (is a dashboard already running?)" if e.errno == errno.EADDRINUSE
                       else f"cannot be opened ({e.strerror or e})")
                raise HyperCloneError(f"port {port} on {address} {why}; choose another with --port") from None


def cmd_serve(args) -> int:
    argv, env, lines = serve_command(args)
    check_port_free(argv[argv.index("--server.address") + 1], args.port)  # before saying it is served there
    for line in lines:
        print(line, flush=True)
    os.execvpe(argv[0], argv, env)  # the dashboard replaces this process (Ctrl-C stops it)
    return 0  # not reached

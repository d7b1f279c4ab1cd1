"""``hyperclone serve``: start the dashboard, on this machine only unless ``--lan`` asks for a class.

On localhost the dashboard is the full control panel. With ``--lan`` it binds to every network
interface, prints a warning and a teacher token, and runs in classroom mode (``classroom.py``):
races queue one at a time, and starting one needs the token.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path

from .errors import HyperCloneError

APP = Path(__file__).resolve().parent.parent / "app.py"


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="start the dashboard (localhost; --lan for a class on one server)")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    p.add_argument("--lan", action="store_true",
                   help="listen on every network interface, for a class: classroom mode with a teacher token")
    p.add_argument("--token", default=None,
                   help="the teacher token in --lan mode: 8 or more letters, digits, . _ ~ or - "
                        "(default: a new one, printed at start-up)")
    p.set_defaults(func=cmd_serve)


def serve_command(args: argparse.Namespace, environ: dict | None = None) -> tuple[list[str], dict, list[str]]:
    """(argv, environment, lines to print) that start the dashboard as ``args`` ask; nothing is started."""
    from .classroom import CLASSROOM_ENV, TOKEN_ENV, check_token, new_token

    if not 1 <= args.port <= 65535:
        raise HyperCloneError(f"--port must be between 1 and 65535, got {args.port}")
    if args.token is not None and not args.lan:
        raise HyperCloneError("--token only applies with --lan (on localhost there is no classroom mode)")
    if not APP.is_file():
        raise HyperCloneError(f"the dashboard is not next to this installation ({APP} is missing); "
                              "install HyperClone from its source checkout (pip install -e .)")
    env = dict(os.environ if environ is None else environ)
    address = "0.0.0.0" if args.lan else "localhost"
    argv = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address,
            "--server.port", str(args.port), "--server.headless", "true"]
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
        f"students open http://<this machine's address>:{args.port}; the teacher adds ?token={token}",
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
    os.chdir(APP.parent)  # streamlit reads .streamlit/config.toml (no telemetry, no tracebacks) from here
    os.execvpe(argv[0], argv, env)  # the dashboard replaces this process (Ctrl-C stops it)
    return 0  # not reached

"""Lets Ryu 4.34 start on eventlet 0.33 (Python 3.11): defines eventlet.wsgi.ALREADY_HANDLED when missing.

Ryu's manager imports ryu.app.wsgi, which does `from eventlet.wsgi import
ALREADY_HANDLED`; eventlet 0.30.3 and later dropped that name, so every
`ryu-manager APP` dies with an ImportError before it loads anything. This
module, imported at interpreter start by `iadm-ryu-compat.pth` in the Ryu
environment's site-packages, adds one import hook: when (and only when)
eventlet.wsgi is imported, it is loaded as usual and the name is defined if it
is absent. Nothing else is imported at start-up, so the environment's other
programs pay nothing.

Limit: the name only has to exist for Ryu to import. Ryu's own WebSocket
routes (which return it to eventlet's WSGI server) still need an older
eventlet; iadm does not use them.

Install into the environment of the running interpreter (what
`scripts/setup --ryu` does for .venv-ryu):

    .venv-ryu/bin/python packaging/ryu/iadm_ryu_compat.py --install
"""
from __future__ import annotations

import sys

TARGET = "eventlet.wsgi"
NAME = "ALREADY_HANDLED"
PTH = "iadm-ryu-compat.pth"


class _Loader:
    """eventlet.wsgi's own loader, then the missing name."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        if not hasattr(module, NAME):
            setattr(module, NAME, object())

    def __getattr__(self, name):   # get_source, get_filename, ... as the wrapped loader has them
        return getattr(self.inner, name)


class _Finder:
    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        import importlib.util
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]   # once is enough
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install_hook() -> None:
    """Define the name now if eventlet.wsgi is loaded, else when it is."""
    loaded = sys.modules.get(TARGET)
    if loaded is not None:
        if not hasattr(loaded, NAME):
            setattr(loaded, NAME, object())
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def install_files(site_dir: str | None = None) -> list[str]:
    """Copy this module and its .pth file into site-packages (of this interpreter by default)."""
    import os
    import shutil
    import sysconfig
    site_dir = site_dir or sysconfig.get_path("purelib")
    if not os.path.isdir(site_dir):
        raise SystemExit(f"iadm_ryu_compat: {site_dir} is not a directory")
    module = os.path.join(site_dir, "iadm_ryu_compat.py")
    if os.path.abspath(__file__) != os.path.abspath(module):
        shutil.copyfile(__file__, module)
    pth = os.path.join(site_dir, PTH)
    with open(pth, "w") as fh:
        fh.write("import iadm_ryu_compat; iadm_ryu_compat.install_hook()\n")
    return [module, pth]


if __name__ == "__main__":
    if sys.argv[1:] in (["--install"], ["-i"]):
        for written in install_files():
            print(f"iadm_ryu_compat: wrote {written}")
    else:
        print("usage: PYTHON iadm_ryu_compat.py --install   (into that PYTHON's site-packages)", file=sys.stderr)
        raise SystemExit(2)

"""The one thing pyproject.toml cannot say: pop3d's two optional C modules.

- pop3d.protocol._stuffing: RETR's encoder (the Python one is pop3d.protocol.dotstuff);
- pop3d.store._nowait: reading a cached message on the event loop (Linux only; the ctypes
  version is in pop3d.store.nowait).

Without a C compiler and Python's headers the build goes on without them, and pop3d does the
same in Python, only slower.
"""

import sys

from setuptools import Extension, setup


def optional(name: str, source: str) -> Extension:
    return Extension(name, [source], optional=True, extra_compile_args=["-O2"])


modules = [optional("pop3d.protocol._stuffing", "src/pop3d/protocol/_stuffing.c")]
if sys.platform.startswith("linux"):
    modules.append(optional("pop3d.store._nowait", "src/pop3d/store/_nowait.c"))

setup(ext_modules=modules)

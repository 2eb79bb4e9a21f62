"""The one thing pyproject.toml cannot say: the optional C encoder (src/pop3d/protocol/_stuffing.c).

Without a C compiler and Python's headers the build goes on without it, and pop3d uses the
same encoder in Python (pop3d.protocol.dotstuff), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pop3d.protocol._stuffing",
            ["src/pop3d/protocol/_stuffing.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)

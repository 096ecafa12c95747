"""The one compiled part: the native NDJSON -> CSV fast path (everything else is in pyproject.toml).

It is optional: without a C compiler the package installs and runs on the Python path alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "batched_event_api.events._native",
            ["src/batched_event_api/events/_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)

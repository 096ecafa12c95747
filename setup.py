"""The compiled parts (everything else is in pyproject.toml): the native NDJSON -> CSV pass, and a
commit round's writes and syncs with the GIL released once (commit/_durable.c).

Both are optional: without a C compiler the package installs and runs on the Python path alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "batched_event_api.events._native",
            ["src/batched_event_api/events/_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "batched_event_api.commit._durable",
            ["src/batched_event_api/commit/_durable.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)

"""Build the optional native hot path (pytest_kvfabric/endpoint/_fast.c).

Everything else is declared in pyproject.toml. The extension is optional: where no C
compiler is found the package installs without it, the agents use the Python equivalents,
and every Result says which one ran (data_path sender/receiver "hot_path").
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pytest_kvfabric.endpoint._fast",
            ["pytest_kvfabric/endpoint/_fast.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)

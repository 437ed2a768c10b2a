"""Build the Cython core and generate the protobuf/gRPC modules.

The generated modules (``proto/fuelswitch/v1/*_pb2*.py``) and the Cython
outputs (``core/*.cpp``, ``*.so``) are produced here and never committed.
Set ``FUELSWITCH_DEBUG=1`` to compile the core with its expensive invariant
checks turned on.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "fuelswitch" / "v1"


def generate_protos() -> None:
    """Compile proto/fuelswitch/v1/*.proto with grpc_tools (``-I proto``)."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - build environment problem
        sys.exit(f"fuelswitch build: grpcio-tools is required to generate protobuf code ({exc})")
    sources = sorted(PROTO_DIR.glob("*.proto"))
    if not sources:
        return
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={PROTO_ROOT}",
        f"--pyi_out={PROTO_ROOT}",
        f"--grpc_python_out={PROTO_ROOT}",
        *[str(p) for p in sources],
    ]
    if protoc.main(args) != 0:
        sys.exit("fuelswitch build: protoc failed on " + ", ".join(p.name for p in sources))


def core_extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:  # pragma: no cover - build environment problem
        sys.exit("fuelswitch build: Cython is required to build core/ (pip install Cython==3.3.1)")
    debug = os.environ.get("FUELSWITCH_DEBUG") == "1"
    ext = Extension(
        "core._ledger",
        sources=["core/_ledger.pyx"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O3" if not debug else "-O0", "-g0" if not debug else "-g"],
        define_macros=[("CORE_DEBUG", "1" if debug else "0")],
    )
    # SM2 on OpenSSL's libcrypto (switch/sm2.py); gmssl in switch/sm2_reference.py is its reference.
    sm2 = Extension(
        "switch._sm2_openssl",
        sources=["switch/_sm2_openssl.pyx"],
        libraries=["crypto"],
        extra_compile_args=["-O2" if not debug else "-O0", "-g0" if not debug else "-g"],
    )
    return cythonize(
        [ext, sm2],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


class BuildExtWithProtos(build_ext):
    # Editable installs only run build_ext, so the protos are generated here too.
    def run(self) -> None:
        generate_protos()
        super().run()


setup(
    packages=["core", "switch", "ext", "loadtest", "fuelswitch", "fuelswitch.v1"],
    package_dir={"fuelswitch": "proto/fuelswitch"},
    package_data={"core": ["*.pyi", "*.pxd", "*.pyx", "*.pxi", "py.typed"], "switch": ["migrations/*.sql"]},
    ext_modules=core_extensions(),
    cmdclass={"build_py": BuildPyWithProtos, "build_ext": BuildExtWithProtos},
)

"""Where torch comes from, and which build an environment really got: standard library only.

Shared by noxfile.py (which loads this file) and docker/Dockerfile (which copies it into the build):

    python scripts/torch_wheels.py probe <index URL> [--flavour cpu|cuXXX] [--timeout S]
        one look at a wheel index, about a second at most; prints what it found and what the
        install will do; exit status 0 when the index answers, 1 when pip should not be given it
    python scripts/torch_wheels.py install --index-base <base> --flavour <flavour> <requirement>...
        probe <base>/<flavour> (when the base is not empty), pip install the requirements with the
        index only if it answered, then print what was installed (the Docker build)
    python scripts/torch_wheels.py installed [--flavour cpu|cuXXX] [--json]
        the torch and torchvision builds of the interpreter running it (torchvision read from its
        installed files, never imported); warns when the CUDA version is not the flavour's

Why probe: pip retries an unreachable index 5 times for every package with back-off, so an
install that lists one with --extra-index-url sits silent for minutes before it falls back to PyPI.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from importlib.machinery import PathFinder

PROBE_TIMEOUT_S = 2.0
# The oldest NVIDIA driver that runs any build of a CUDA major version (CUDA's minor version
# compatibility): a torch built for CUDA 13 does not run on a 570 driver that runs CUDA 12.8.
MIN_DRIVER = {"11": "450", "12": "525", "13": "580"}


# --- the index ---------------------------------------------------------------------------------


def index_url(base: str, flavour: str) -> str:
    """`<base>/<flavour>`, or "" when `base` is empty (PyPI only)."""
    base = base.strip().rstrip("/")
    return f"{base}/{flavour}" if base else ""


def probe_index(url: str, timeout: float = PROBE_TIMEOUT_S, package: str = "torch") -> tuple[bool, str]:
    """Whether the wheel index `url` answers for `package`, found out within `timeout` seconds.

    Returns (True, what it said) or (False, why not): a name that does not resolve, a refused
    connection, no answer in time, or an HTTP error for the package's page (`<url>/<package>/`,
    the page pip reads). The whole look is bounded by `timeout`, resolving the name included.
    """
    found: list[tuple[bool, str]] = []
    worker = threading.Thread(target=lambda: found.append(_probe(url, timeout, package)), daemon=True)
    worker.start()
    worker.join(timeout)
    return found[0] if found else (False, f"no answer within {timeout:g} s")


def _probe(url: str, timeout: float, package: str) -> tuple[bool, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file" or not parts.scheme:
        path = urllib.request.url2pathname(parts.path) if parts.scheme else url
        return (True, "a local folder") if os.path.isdir(path) else (False, f"no folder {path}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, f"not an http(s) or file URL: {url!r}"
    page = url.rstrip("/") + f"/{package}/"
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname):  # behind a proxy, the proxy resolves
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError as error:
            return False, f"the name {parts.hostname} does not resolve: {error.strerror or error}"
    context = ssl.create_default_context()
    if os.path.isfile(os.environ.get("PIP_CERT", "")):  # the CA bundle pip is told to use
        context.load_verify_locations(os.environ["PIP_CERT"])
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(page, method=method, headers={"User-Agent": "torch-bench probe"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return True, f"HTTP {response.status} for {page}"
        except urllib.error.HTTPError as error:
            if method == "HEAD" and error.code in (405, 501):  # HEAD not allowed: ask with GET
                continue
            return False, f"HTTP {error.code} {error.reason} for {page}"
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLCertVerificationError):
                # the server answers; whether pip trusts its certificate is pip's settings' business
                return (
                    True,
                    f"it answers, but its certificate did not verify here ({error.reason.verify_message})",
                )
            return False, _describe(error.reason)
        except (OSError, ValueError) as error:  # timeouts, resets, malformed answers
            return False, _describe(error)
    return False, f"no answer to HEAD or GET for {page}"


def _describe(error: object) -> str:
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "no answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def pypi_torch(flavour: str) -> str:
    """What an install without PyTorch's index gets, in words."""
    linux_x86 = sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")
    if flavour == "cpu":
        return "PyPI's torch, a CUDA build that runs on the CPU" if linux_x86 else "PyPI's torch"
    return f"PyPI's torch, whose CUDA version may not be {flavour}'s (checked after the install)"


def probe_message(url: str, flavour: str, ok: bool, reason: str, otherwise: str | None = None) -> str:
    """The one line a session or a build prints about the index before it installs; `otherwise`:
    what happens when it does not answer (default: PyPI's torch is installed)."""
    if ok:
        return f"PyTorch's index {url} answers ({reason}): torch and torchvision come from it"
    return (
        f"PyTorch's index {url} is unreachable ({reason}): {otherwise or f'installing {pypi_torch(flavour)}'}"
    )


# --- the installed build -----------------------------------------------------------------------


def version_file_values(package: str, paths: list[str] | None = None) -> dict[str, object]:
    """The literal assignments of `<package>/version.py` (`__version__`, `cuda`, ...), found like an
    import would find the package (on `paths`, default sys.path) but without executing it.

    torchvision's metadata says 0.29.1 where its version.py says 0.29.1+cu130; importing it to ask
    fails outright beside a mismatched torch (`operator torchvision::nms does not exist`).
    """
    spec = PathFinder.find_spec(package, paths)  # a top-level lookup: runs nothing of the package
    if spec is None or not spec.origin or not spec.submodule_search_locations:
        return {}
    version_py = os.path.join(os.path.dirname(spec.origin), "version.py")
    try:
        with open(version_py, encoding="utf-8") as file:
            tree = ast.parse(file.read(), version_py)
    except (OSError, SyntaxError, ValueError):
        return {}
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
    return values


def package_version(package: str, paths: list[str] | None = None) -> str | None:
    """The full version of an installed package, local label included (`0.29.1+cu130`), from its
    version.py; from its metadata where it has none; None where it is not installed."""
    version = version_file_values(package, paths).get("__version__")
    if isinstance(version, str):
        return version
    if paths is not None:
        return None
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def installed_build() -> dict[str, str | None]:
    """torch's version and CUDA version (from torch itself), torchvision's full version (from its files)."""
    build: dict[str, str | None] = {
        "torch": None,
        "cuda": None,
        "torchvision": package_version("torchvision"),
    }
    try:
        import torch

        build["torch"], build["cuda"] = str(torch.__version__), torch.version.cuda
    except Exception as error:  # `bench check` explains a torch that does not import; say what is there
        values = version_file_values("torch")
        build["torch"] = str(values.get("__version__") or package_version("torch"))
        build["cuda"] = values.get("cuda") if isinstance(values.get("cuda"), str) else None  # type: ignore[assignment]
        build["torch_import_error"] = f"{type(error).__name__}: {error}"
    return build


def flavour_cuda(flavour: str) -> str | None:
    """The CUDA version a wheel flavour stands for: cu128 -> 12.8, cu130 -> 13.0, cpu -> None."""
    match = re.fullmatch(r"cu(\d+)(\d)", flavour.strip().lower())
    if match:
        return f"{int(match.group(1))}.{match.group(2)}"
    if flavour.strip().lower() == "cpu":
        return None
    raise ValueError(f"not a wheel flavour this project knows: {flavour!r} (cpu, cu126, cu128, cu130, ...)")


def describe_build(build: dict[str, str | None]) -> str:
    kind = f"CUDA {build['cuda']} build" if build.get("cuda") else "CPU build"
    vision = build.get("torchvision") or "not installed"
    return f"torch {build.get('torch')} ({kind}), torchvision {vision}"


def flavour_mismatch(flavour: str, cuda: str | None, torch_version: str | None = None) -> str | None:
    """None when a torch whose `torch.version.cuda` is `cuda` is the build `flavour` asks for; else why not."""
    try:
        wanted = flavour_cuda(flavour)
    except ValueError as error:
        return f"cannot check the build: {error}"
    if wanted == cuda:
        return None
    got = f"torch {torch_version}" if torch_version else "the torch installed"
    if wanted is None:
        return (
            f"asked for the CPU build, but {got} is a CUDA {cuda} build (PyPI's, the CPU index was not "
            "used): it runs on the CPU, but it is not the CPU wheel; results record which it was"
        )
    if cuda is None:
        return f"asked for {flavour} (CUDA {wanted}), but {got} is a CPU-only build: it cannot use a GPU"
    major = cuda.split(".")[0]
    driver = (
        f"; CUDA {major} builds need NVIDIA driver {MIN_DRIVER[major]} or newer"
        if major in MIN_DRIVER
        else ""
    )
    return (
        f"asked for {flavour} (CUDA {wanted}), but {got} is a CUDA {cuda} build{driver}. "
        "Its wheel came from elsewhere than the flavour's index (unreachable, or BENCH_TORCH_INDEX_BASE empty)"
    )


# --- command line (the Docker build) -----------------------------------------------------------


def install(requirements: list[str], base: str, flavour: str, dry_run: bool = False) -> int:
    """pip-installs `requirements` with `<base>/<flavour>` as an extra index if it answers, PyPI alone
    if not (said in one line either way), then prints the build installed and any flavour mismatch."""
    url = index_url(base, flavour)
    if url:
        ok, reason = probe_index(url)
        print(probe_message(url, flavour, ok, reason), flush=True)
        url = url if ok else ""
    else:
        print(
            f"no PyTorch index given (TORCH_INDEX_BASE is empty): installing {pypi_torch(flavour)}",
            flush=True,
        )
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        *requirements,
        *(["--extra-index-url", url] if url else []),
    ]
    if dry_run:
        print(" ".join(command))
        return 0
    status = subprocess.run(command).returncode
    if status:
        return status
    # a fresh interpreter: the one running this has not seen the new packages
    return subprocess.run(
        [sys.executable, os.path.abspath(__file__), "installed", "--flavour", flavour]
    ).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("probe", help="does this wheel index answer? exit 0 yes, 1 no")
    probe.add_argument("url")
    probe.add_argument("--flavour", default="cpu")
    probe.add_argument("--timeout", type=float, default=PROBE_TIMEOUT_S)
    install_ = commands.add_parser("install", help="probe the index, pip install, print the build")
    install_.add_argument(
        "--index-base", default="", help="PyTorch's indexes (<base>/<flavour>); empty: PyPI"
    )
    install_.add_argument("--flavour", default="cpu")
    install_.add_argument(
        "--dry-run", action="store_true", help="print the pip command instead of running it"
    )
    install_.add_argument("requirements", nargs="+")
    installed = commands.add_parser("installed", help="the torch and torchvision builds installed here")
    installed.add_argument("--flavour", help="warn when torch's CUDA version is not this flavour's")
    installed.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "probe":
        ok, reason = probe_index(args.url, args.timeout)
        print(probe_message(args.url, args.flavour, ok, reason), flush=True)
        return 0 if ok else 1
    if args.command == "install":
        return install(args.requirements, args.index_base, args.flavour, args.dry_run)
    build = installed_build()
    if args.json:
        print(json.dumps(build))
        return 0
    print(f"installed: {describe_build(build)}")
    if build.get("torch_import_error"):
        print(f"WARNING: torch does not import: {build['torch_import_error']}")
    problem = flavour_mismatch(args.flavour, build["cuda"], build["torch"]) if args.flavour else None
    if problem:
        print(f"WARNING: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

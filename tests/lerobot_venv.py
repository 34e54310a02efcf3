"""The real LeRobot 0.4.4 and 0.6.1, each in its own virtualenv, built once and cached (tests that run LeRobot
itself; docs/lerobot.md §4).

**0.4.4** (the Python running the tests, 3.11): torch 2.13.0 first (the local CPU wheel), `--no-deps
lerobot==0.4.4` (its pins ask for torch < 2.11, which would pull CUDA wheels), then its default runtime
dependencies under a torch constraint, metaworld for its Meta-World env, shallowpi's own dependencies, and
torchvision with its fake-op registration made conditional (the only torchvision build for torch 2.13 here
is a CUDA one whose `import` dies without CUDA; LeRobot never calls its C++ ops).

**0.6.1** (needs Python >= 3.12: $SHALLOWPI_PY312, else `python3.12` / `python3.13` on PATH, else pyenv's
newest 3.12 / 3.13): `lerobot[pi,training]==0.6.1` as pip resolves it (torch and torchvision are the CUDA
builds from PyPI, several GB, run on the CPU), plus metaworld 3.1.1 and mujoco < 4 instead of the
`metaworld` extra (which pins metaworld 3.0.0 and lets mujoco 4 in, whose env fails with "could not
broadcast input array from shape (11,) into shape (12,)"; shallowpi's collection needs 3.1.1's corner4).

Each venv lives in ~/.cache/shallowpi/venvs/lerobot<version>-<hash of its spec> (or $SHALLOWPI_VENV_CACHE),
so a clean machine builds it once and later runs reuse it. A marker file written last marks a complete build;
a half-built folder is removed and rebuilt. shallowpi and the plugin are installed editable (no deps) from
the repository under test on every use, so a cached venv always runs this checkout.

Run `python tests/lerobot_venv.py [0.4.4|0.6.1 ...]` to build by hand and print each python.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "lerobot_policy_shallowpi"
VERSIONS = ("0.4.4", "0.6.1")

# shallowpi's own runtime dependencies (pyproject), for the venvs that install shallowpi with --no-deps
SHALLOWPI_DEPS = [
    "safetensors>=0.4",
    "pyarrow>=14",
    "av>=12",
    "sentencepiece>=0.2",
    "websockets>=12",
    "msgpack>=1.0.5",
    "tqdm>=4.66",
]

# ---- LeRobot 0.4.4 ----
TORCH = "torch==2.13.0"
LEROBOT = "lerobot==0.4.4"
# LeRobot 0.4.4's default (non-extra) runtime dependencies that its train / eval / processor code imports,
# pinned to what resolved on this machine kind, plus metaworld (its env) and shallowpi's own dependencies.
DEPS = [
    "draccus==0.10.0",
    "transformers==4.53.2",  # only for LeRobot's tokenizer step in the cross-check tests
    "huggingface-hub>=0.34.2,<0.36",
    "datasets>=4.0,<5",
    "accelerate>=1.10,<2",
    "diffusers>=0.27.2,<0.36",
    "gymnasium>=1.1.1,<2",
    "einops>=0.8,<0.9",
    "deepdiff>=7.0.1,<9",
    "termcolor>=2.4,<4",
    "imageio>=2.34,<3",
    "jsonlines>=4,<5",
    "packaging>=24.2,<26",
    "av>=15,<16",
    "opencv-python-headless>=4.9,<4.13",
    "pyserial>=3.5,<4",
    "scipy",
    "safetensors>=0.4",
    "metaworld==3.1.1",
    "sentencepiece>=0.2",
    "websockets>=12",
    "msgpack>=1.0.5",
    "tqdm>=4.66",
    "pyarrow>=14",
    "setuptools>=71,<81",
    "wheel",
]
TORCHVISION = "torchvision==0.28.0"
PATCH_VERSION = 1  # bump when _patch_torchvision changes
SPEC = {"torch": TORCH, "lerobot": LEROBOT, "deps": DEPS, "tv": TORCHVISION, "patch": PATCH_VERSION}

# ---- LeRobot 0.6.1 ----
LEROBOT_061 = "lerobot[pi,training]==0.6.1"  # pi: transformers 5 + scipy (π folders); training: lerobot-train
DEPS_061 = [
    # what LeRobot 0.6.1's own pins resolved to on this machine kind (torch < 2.12: PyPI's CUDA build)
    "torch==2.11.0",
    "torchvision==0.26.0",
    "transformers==5.5.4",
    "huggingface-hub==1.33.0",
    # instead of the `metaworld` extra (metaworld==3.0.0 with mujoco unbounded, so MuJoCo 4, whose
    # Meta-World env fails): metaworld 3.1.1 (corner4; it pins mujoco 3.3.0) and a MuJoCo 3
    "metaworld==3.1.1",
    "mujoco>=3.3,<4",
    *SHALLOWPI_DEPS,
]
SPEC_061 = {"lerobot": LEROBOT_061, "deps": DEPS_061}


def python_for(version: str) -> Path | None:
    """The interpreter a version's venv is made with (None: no suitable Python on this machine)."""
    if version == "0.4.4":
        return Path(sys.executable)
    if os.environ.get("SHALLOWPI_PY312"):
        return Path(os.environ["SHALLOWPI_PY312"])
    for name in ("python3.12", "python3.13"):
        found = shutil.which(name)
        if found and ".pyenv/shims" not in found:
            return Path(found)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for minor in ("3.12", "3.13"):
        hits = sorted(glob.glob(str(pyenv_root / "versions" / f"{minor}.*" / "bin" / f"python{minor}")))
        if hits:
            return Path(hits[-1])
    return None


def _python_version(python: Path) -> list[int]:
    out = subprocess.run(
        [str(python), "-c", "import sys; print(*sys.version_info[:2])"], check=True, capture_output=True
    )
    return [int(x) for x in out.stdout.split()]


def venv_dir(version: str = "0.4.4") -> Path:
    root = Path(os.environ.get("SHALLOWPI_VENV_CACHE", Path.home() / ".cache" / "shallowpi" / "venvs"))
    if version == "0.4.4":
        spec = json.dumps({**SPEC, "python": sys.version_info[:2]}, sort_keys=True)
    else:
        py = python_for(version)
        spec = json.dumps({**SPEC_061, "python": _python_version(py)}, sort_keys=True)
    return root / f"lerobot{version.replace('.', '')}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _pip(venv: Path, *args: str, log) -> None:
    cmd = [str(_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), file=log, flush=True)
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def _patch_torchvision(venv: Path) -> None:
    """Make torchvision's two `register_fake` decorators conditional on its C++ ops being loaded."""
    out = subprocess.run(
        [str(_python(venv)), "-c", "import importlib.util as u; print(u.find_spec('torchvision').origin)"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = Path(out.stdout.strip()).parent / "_meta_registrations.py"
    text = path.read_text()
    if "_shallowpi_patched" in text:
        return
    guard = (
        "\n# _shallowpi_patched: without the C++ extension there are no ops to register fakes for.\n"
        "import torchvision.extension as _tv_ext\n"
        "_HAS_OPS = _tv_ext._has_ops()\n"
        "def _maybe(deco):\n"
        "    return deco if _HAS_OPS else (lambda fn: fn)\n"
    )
    lines = text.splitlines(keepends=True)
    # insert the guard after the last top-level import
    last_import = max(i for i, ln in enumerate(lines) if ln.startswith(("import ", "from ")))
    lines.insert(last_import + 1, guard)
    patched = []
    for ln in lines:
        s = ln.lstrip()
        if s.startswith("@torch.library.register_fake("):
            indent = ln[: len(ln) - len(s)]
            ln = f"{indent}@_maybe({s[1:].rstrip()})\n"
        patched.append(ln)
    path.write_text("".join(patched))


def _build_044(venv: Path, log) -> None:
    constraints = venv / "constraints.txt"
    constraints.write_text(f"{TORCH}\n")
    env_c = ["-c", str(constraints)]
    _pip(venv, TORCH, log=log)
    _pip(venv, "--no-deps", LEROBOT, log=log)
    _pip(venv, *env_c, *DEPS, log=log)
    _pip(venv, "--no-deps", TORCHVISION, log=log)
    _patch_torchvision(venv)


def _build_061(venv: Path, log) -> None:
    _pip(venv, "--upgrade", "pip", log=log)
    _pip(venv, LEROBOT_061, *DEPS_061, log=log)


def build(venv: Path, log=None, version: str = "0.4.4") -> None:
    log = log or sys.stderr
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(python_for(version)), "-m", "venv", str(venv)], check=True)
    if version == "0.4.4":
        _build_044(venv, log)
    else:
        _build_061(venv, log)
    check = "import torchvision, lerobot.policies, lerobot.envs.metaworld, metaworld; print('ok')"
    subprocess.run([str(_python(venv)), "-c", check], check=True, stdout=log, stderr=subprocess.STDOUT)
    subprocess.run([str(_python(venv)), "-m", "pip", "freeze"], check=True, stdout=log)
    (venv / "shallowpi-complete").write_text(json.dumps(SPEC if version == "0.4.4" else SPEC_061))


def _install_fast_render(venv: Path) -> None:
    """tests/lerobot_scripts/fast_render.py as a module the venv imports at start (active only with
    $SHALLOWPI_FAST_RENDER set)."""
    out = subprocess.run(
        [str(_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    site = Path(out.stdout.strip())
    src = (REPO / "tests" / "lerobot_scripts" / "fast_render.py").read_text()
    if (
        not (site / "_shallowpi_fast_render.py").is_file()
        or (site / "_shallowpi_fast_render.py").read_text() != src
    ):
        (site / "_shallowpi_fast_render.py").write_text(src)
        (site / "_shallowpi_fast_render.pth").write_text("import _shallowpi_fast_render\n")


def _install_checkout(venv: Path, log) -> None:
    """shallowpi + the plugin from this repository, editable, without deps (seconds; skipped if current)."""
    _install_fast_render(venv)
    want = {"shallowpi": REPO, "lerobot_policy_shallowpi": PLUGIN}
    probe = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for n in ('shallowpi', 'lerobot_policy_shallowpi'):\n"
        "    try:\n"
        "        out[n] = json.loads(m.distribution(n).read_text('direct_url.json') or '{}').get('url')\n"
        "    except m.PackageNotFoundError:\n"
        "        out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    got = json.loads(
        subprocess.run([str(_python(venv)), "-c", probe], check=True, capture_output=True).stdout
    )
    stale = [p for n, p in want.items() if got.get(n) != p.as_uri()]
    if stale:
        args = [a for p in stale for a in ("-e", str(p))]
        _pip(venv, "--no-deps", "--no-build-isolation", *args, log=log)


def ensure(version: str = "0.4.4") -> Path:
    """The venv's python, building the venv first if needed (locked, so parallel runs build it once)."""
    if version not in VERSIONS:
        raise ValueError(f"no LeRobot venv spec for {version!r} (have {', '.join(VERSIONS)})")
    if python_for(version) is None:
        raise FileNotFoundError(f"LeRobot {version} needs Python >= 3.12: none found (set $SHALLOWPI_PY312)")
    venv = venv_dir(version)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log_path = venv.parent / f"{venv.name}.log"
        with open(log_path, "a") as log:
            try:
                if not (venv / "shallowpi-complete").is_file():
                    build(venv, log, version)
                _install_checkout(venv, log)
            except subprocess.CalledProcessError as e:
                raise RuntimeError(
                    f"building the LeRobot {version} venv {venv} failed ({e}); see {log_path}"
                ) from e
    return _python(venv)


if __name__ == "__main__":
    for v in sys.argv[1:] or ["0.4.4"]:
        print(ensure(v))

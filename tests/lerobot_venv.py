"""The real LeRobot 0.4.4 in its own virtualenv, built once and cached (tests that run LeRobot itself).

How it installs on a CPU machine (docs/lerobot.md §4): torch 2.13.0 first (the local CPU
wheel), `--no-deps lerobot==0.4.4` (its pins ask for torch < 2.11, which would pull CUDA wheels), then its
default runtime dependencies under a torch constraint, metaworld for its Meta-World env, shallowpi's own
dependencies, and torchvision with its fake-op registration made conditional (the only torchvision build for
torch 2.13 here is a CUDA one whose `import` dies without CUDA; LeRobot never calls its C++ ops).

The venv lives in ~/.cache/shallowpi/venvs/lerobot044-<hash of this spec> (or $SHALLOWPI_VENV_CACHE), so a
clean machine builds it once (about 2 minutes) and later runs reuse it. A marker file written last marks a
complete build; a half-built folder is removed and rebuilt. shallowpi and the plugin are installed editable
(no deps) from the repository under test on every use, so the cached venv always runs this checkout.

Run `python tests/lerobot_venv.py` to build it by hand and print its python.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "lerobot_policy_shallowpi"

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


def venv_dir() -> Path:
    root = Path(os.environ.get("SHALLOWPI_VENV_CACHE", Path.home() / ".cache" / "shallowpi" / "venvs"))
    spec = json.dumps({**SPEC, "python": sys.version_info[:2]}, sort_keys=True)
    return root / f"lerobot044-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


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


def build(venv: Path, log=None) -> None:
    log = log or sys.stderr
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(f"{TORCH}\n")
    env_c = ["-c", str(constraints)]
    _pip(venv, TORCH, log=log)
    _pip(venv, "--no-deps", LEROBOT, log=log)
    _pip(venv, *env_c, *DEPS, log=log)
    _pip(venv, "--no-deps", TORCHVISION, log=log)
    _patch_torchvision(venv)
    check = "import torchvision, lerobot.policies, lerobot.envs.metaworld, metaworld; print('ok')"
    subprocess.run([str(_python(venv)), "-c", check], check=True, stdout=log, stderr=subprocess.STDOUT)
    (venv / "shallowpi-complete").write_text(json.dumps(SPEC))


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


def ensure() -> Path:
    """The venv's python, building the venv first if needed (locked, so parallel runs build it once)."""
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log_path = venv.parent / f"{venv.name}.log"
        with open(log_path, "a") as log:
            try:
                if not (venv / "shallowpi-complete").is_file():
                    build(venv, log)
                _install_checkout(venv, log)
            except subprocess.CalledProcessError as e:
                raise RuntimeError(f"building the LeRobot venv {venv} failed ({e}); see {log_path}") from e
    return _python(venv)


if __name__ == "__main__":
    print(ensure())

"""Policies and datasets named by a Hugging Face hub id (`lerobot/pi05_base`, `org/name@revision`) as well
as by a folder, resolved through `huggingface_hub` (its cache layout, `HF_HUB_OFFLINE`, tokens).

    resolve_policy("out/l6")                  -> out/l6 (a folder that exists wins)
    resolve_policy("lerobot/pi05_base")       -> $HF_HUB_CACHE/models--lerobot--pi05_base/snapshots/<commit>
    resolve_policy("lerobot/pi05_base@v1.0")  -> the snapshot of that branch, tag or commit
    resolve_dataset("lerobot/libero")         -> $HF_LEROBOT_HOME/lerobot/libero (LeRobot <= 0.5's folder), or
                                                 the dataset snapshot in $HF_LEROBOT_HOME/hub (LeRobot 0.6's
                                                 cache) or in $HF_HUB_CACHE

Online, a missing snapshot is downloaded (policies into the hub cache, datasets into LeRobot's); offline
(`HF_HUB_OFFLINE=1`) only the caches are read, and a miss is one UserError naming the id and the folders
looked in. `huggingface_hub` is imported only when an argument is a hub id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from shallowpi.errors import MissingFileError, UserError

# owner/name as the hub spells repo ids, then an optional @revision (branch, tag or commit hash)
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")


@dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str | os.PathLike) -> HubId | None:
    """`owner/name[@revision]` -> HubId; anything else (absolute or ./ paths, deeper paths) -> None."""
    m = _HUB_ID.match(str(text))
    if m is None or ".." in m["repo"] or m["repo"].endswith((".", "-")):
        return None
    return HubId(m["repo"], m["revision"])


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _expand(p: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(p)))


def _hf_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return _expand(os.environ.get("HF_HOME", os.path.join(xdg, "huggingface")))


def hub_cache() -> Path:
    """The Hugging Face hub cache by huggingface_hub's rule, read now (the library reads it at import):
    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (default ~/.cache/huggingface/hub)."""
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE", str(_hf_home() / "hub"))
    return _expand(os.environ.get("HF_HUB_CACHE", legacy))


def lerobot_home() -> Path:
    """LeRobot's dataset folder: $HF_LEROBOT_HOME, else $HF_HOME/lerobot (LeRobot's utils/constants.py)."""
    return Path(os.environ.get("HF_LEROBOT_HOME", str(_hf_home() / "lerobot"))).expanduser()


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")


def _snapshot(ref: HubId, repo_type: str, cache_dir: Path, local_only: bool) -> Path:
    """huggingface_hub's snapshot_download; its errors pass through."""
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            ref.repo_id,
            repo_type=repo_type,
            revision=ref.revision,
            cache_dir=str(cache_dir),
            local_files_only=local_only,
        )
    )


def _miss(kind: str, text: str, ref: HubId, places: list[Path], offline: bool, cause: Exception | None):
    where = " or ".join(str(p) for p in places)
    if offline:
        why = "offline (HF_HUB_OFFLINE=1)"
    else:
        why = f"not downloaded ({' '.join(str(cause).split())})" if cause else "not downloaded"
    return MissingFileError(
        f"{text}: no such folder, and the {kind} {ref} is not in the cache {where}; {why}"
    )


def resolve_policy(text: str | os.PathLike) -> Path:
    """A pretrained policy folder, or the hub snapshot a `owner/name[@revision]` id names."""
    path = Path(text).expanduser()
    ref = parse_hub_id(text)
    if path.exists() or ref is None:
        return path
    from huggingface_hub import errors

    cache, offline = hub_cache(), _offline()
    try:
        return _snapshot(ref, "model", cache, local_only=offline)
    except errors.LocalEntryNotFoundError as e:
        raise _miss("model", str(text), ref, [cache], offline, e) from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.HfHubHTTPError) as e:
        raise UserError(f"{text}: no such folder, and the hub has no model {ref}: {_first_line(e)}") from None


def _is_dataset(d: Path) -> bool:
    return (d / "meta" / "info.json").is_file()


def resolve_dataset(text: str | os.PathLike) -> Path:
    """A LeRobotDataset folder: the folder itself; for an `owner/name[@revision]` id, LeRobot's own
    `$HF_LEROBOT_HOME/owner/name` (no revision given), else the `repo_type="dataset"` snapshot in LeRobot
    0.6's cache `$HF_LEROBOT_HOME/hub` or the hub cache, else (online) downloaded into LeRobot's cache."""
    path = Path(text).expanduser()
    ref = parse_hub_id(text)
    if path.exists() or ref is None:
        return path
    local = lerobot_home() / ref.repo_id
    if ref.revision is None and _is_dataset(local):
        return local
    from huggingface_hub import errors

    caches, offline = [lerobot_home() / "hub", hub_cache()], _offline()
    for cache in caches:
        try:
            return _snapshot(ref, "dataset", cache, local_only=True)
        except errors.LocalEntryNotFoundError:
            continue
    places = ([local] if ref.revision is None else []) + caches
    if offline:
        raise _miss("dataset", str(text), ref, places, True, None)
    try:
        return _snapshot(ref, "dataset", caches[0], local_only=False)
    except errors.LocalEntryNotFoundError as e:
        raise _miss("dataset", str(text), ref, places, False, e) from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.HfHubHTTPError) as e:
        raise UserError(
            f"{text}: no such folder, and the hub has no dataset {ref}: {_first_line(e)}"
        ) from None


def _first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


__all__ = ["HubId", "hub_cache", "lerobot_home", "parse_hub_id", "resolve_dataset", "resolve_policy"]

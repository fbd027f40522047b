"""Where a learner's zoo fetches a checkpoint it lacks: the kit at ``$LABKIT_KIT_URL`` (a laptop serving the
classroom kit, ``python -m labkit.zoo serve``), else this release's published kit (the files attached to the GitHub
release ``v<version>`` of the repository the package names); ``LABKIT_KIT_URL=off`` turns fetching off. Each
address gets ``PROBE_SECONDS`` to list its checkpoints before the zoo trains instead; a fetched file is checked
against that list's SHA-256."""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .._io import USER_AGENT, ChecksumError, download, kit_setting

__all__ = ["MANIFEST", "RELEASE_MANIFEST", "PROBE_SECONDS", "Source", "sources", "release_url", "fetch_checkpoint"]

MANIFEST = "manifest.json"  # in every folder of checkpoints: file name -> sha256, bytes, and how it was trained
RELEASE_MANIFEST = "zoo-manifest.json"  # a GitHub release's files sit side by side: the zoo's manifest renamed
PROBE_SECONDS = 3.0  # how long a kit's address gets to answer for its manifest before the zoo trains instead


@dataclass(frozen=True)
class Source:
    """Where a kit's checkpoints can be fetched: ``base + file name``, listed in ``base + manifest``."""

    base: str
    manifest: str
    data_base: str  # where its data sets are: ``data_base + file name``


def release_url() -> str | None:
    """The published kit of this release: ``https://github.com/OWNER/NAME/releases/download/v<version>/``, from
    the installed package's metadata; None if the package is not installed."""
    from importlib import metadata

    try:
        meta = metadata.metadata("foundation-models-lab")
    except metadata.PackageNotFoundError:
        return None
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [] if ", " in u)
    repo = urls.get("Repository", "").rstrip("/")
    return f"{repo}/releases/download/v{meta['Version']}/" if repo.startswith("https://github.com/") else None


def sources() -> list[Source]:
    """Where the zoo may fetch a missing checkpoint, in order: ``$LABKIT_KIT_URL`` (a served kit folder), else
    this release's published kit; none under ``LABKIT_KIT_URL=off``."""
    url = kit_setting()
    if url == "off":
        return []
    if url:
        return [Source(url + "zoo/", MANIFEST, url)]
    release = release_url()
    return [Source(release, RELEASE_MANIFEST, release)] if release else []


def _get_json(url: str, timeout: float) -> dict | None:
    """``url``'s JSON within ``timeout`` seconds in all (a stalled network gives up on time), else None."""
    answer: list = []

    def get() -> None:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=timeout) as r:
                answer.append(json.loads(r.read().decode("utf-8")))
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else None


def fetch_checkpoint(name: str, target: Path, progress: bool = True) -> dict | None:
    """Download ``name``'s checkpoint (file ``target.name``) into ``target`` from the first source that lists it,
    checked against that source's manifest; its manifest entry, or None if no source has it or answers in time."""
    filename = target.name
    for source in sources():
        listing = _get_json(source.base + source.manifest, PROBE_SECONDS)
        entry = (listing or {}).get("files", {}).get(filename)
        if entry is None:
            continue
        try:
            download(source.base + filename, target, entry["sha256"], progress=progress, timeout=30.0,
                     desc=f"Downloading {name}")
        except (OSError, ChecksumError) as e:
            print(f"Could not fetch {name!r} from {source.base}: {e}", flush=True)
            continue
        print(f"{name!r}: fetched from {source.base} and checked ({entry['bytes'] / 1e6:.1f} MB).", flush=True)
        return {**entry, "fetched_from": source.base}
    return None

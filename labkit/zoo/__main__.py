"""The zoo for an instructor: list, build, verify, pack, unpack and serve the classroom kit.

    python -m labkit.zoo list                    # every model: version, size, built or not, where and how long it trained
    python -m labkit.zoo build --all             # train what is missing, in dependency order
    python -m labkit.zoo build gpt-english-sft   # one model and what it needs
    python -m labkit.zoo verify                  # check every built checkpoint against its manifest
    python -m labkit.zoo pack kit.tar            # data sets + models + checksums in one archive (or a folder)
    python -m labkit.zoo unpack kit.tar          # check it and copy it into this machine's cache
    python -m labkit.zoo serve kit/ --port 8000  # serve an unpacked kit to the room (learners set LABKIT_KIT_URL)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import zoo
from . import kit


def _list() -> int:
    rows = []
    for name in zoo.order():
        r, found = zoo.recipe(name), zoo.find(name)
        where = "-"
        if found is not None:
            where = "pre-seeded" if zoo.seeded_dir() and found.parent == zoo.seeded_dir() else "cache"
        size = f"{found.stat().st_size / 1e6:.1f} MB" if found else "-"
        minutes = f"{r.minutes_cpu:g} min" if r.minutes_cpu else "?"
        entry = zoo.manifest(found.parent).get(found.name, {}) if found is not None else {}
        trained = "-"
        if entry.get("trained_on"):  # where this copy was trained, and how long it took there
            took = f"{entry['seconds']:.0f} s on " if entry.get("seconds") is not None else ""
            trained = took + entry["trained_on"]
        rows.append((name, f"v{r.version}", size, where, minutes, ", ".join(r.needs) or "-", trained))
    header = ("model", "version", "size", "built", "to train (2-core CPU)", "needs", "this copy trained")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    total = sum(zoo.recipe(n).minutes_cpu or 0 for n in zoo.order() if zoo.find(n) is None)
    print(f"\n{sum(r[3] != '-' for r in rows)} of {len(rows)} built; building the rest takes about {total:g} min "
          "on a 2-core CPU.")
    return 0


def _verify() -> int:
    results = kit.verify()
    for file, reason in results:
        print(f"{'ok  ' if reason is None else 'BAD '} {file}" + ("" if reason is None else f": {reason}"))
    bad = [f for f, reason in results if reason is not None]
    if bad:
        print(f"\n{len(bad)} bad file(s): delete them and run `python -m labkit.zoo build --all` (or unpack the kit "
              "again).")
    elif not results:
        print("No checkpoints built yet: `python -m labkit.zoo build --all`.")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.zoo", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every model: version, size, built or not, expected training time")
    b = sub.add_parser("build", help="train (or fetch) models and what they need")
    b.add_argument("names", nargs="*", help="models to build (default with --all: every one)")
    b.add_argument("--all", action="store_true", help="every model")
    b.add_argument("--retrain", action="store_true", help="train again even where a checked copy exists")
    sub.add_parser("verify", help="check every built checkpoint against its manifest")
    p = sub.add_parser("pack", help="data sets + models + checksums into a .tar (or a folder)")
    p.add_argument("out", type=Path, help="kit.tar, or a folder")
    p.add_argument("names", nargs="*", help="only these models (default: every one)")
    u = sub.add_parser("unpack", help="check a kit and copy it into this machine's cache")
    u.add_argument("kit", type=Path, help="kit.tar or a kit folder")
    u.add_argument("--to", type=Path, help="another folder than the cache (then set LABKIT_DATA_DIR to it)")
    s = sub.add_parser("serve", help="serve a kit folder to the room over HTTP")
    s.add_argument("folder", type=Path)
    s.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)

    if args.command == "list":
        return _list()
    if args.command == "build":
        if not args.names and not args.all:
            ap.error("build: name the models, or pass --all")
        for name, seconds in kit.build(None if args.all else args.names, retrain=args.retrain):
            print(f"{name}: ready ({seconds:.0f} s)")
        return 0
    if args.command == "verify":
        return _verify()
    if args.command == "pack":
        out = kit.pack(args.out, args.names or None)
        size = out.stat().st_size if out.is_file() else sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"kit written: {out} ({size / 1e6:.1f} MB)")
        return 0
    if args.command == "unpack":
        to = kit.unpack(args.kit, args.to)
        print(f"kit checked and unpacked into {to}" + ("" if args.to is None else
                                                       f"; now: export LABKIT_DATA_DIR={to}"))
        return 0
    kit.serve(args.folder, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

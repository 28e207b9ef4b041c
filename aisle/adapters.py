"""`aisle adapters`: the adapter registry from the command line, local or `s3://`, no server needed.

    aisle adapters list [--registry R]                      every task: CURRENT and its versions
    aisle adapters show <task> [<version>]                  one version's metrics, lineage and config
    aisle adapters promote <task> <version> --reason TEXT   move CURRENT (history line, as the admin route)
    aisle adapters rollback <task> --reason TEXT            undo the last promotion still in effect
    aisle adapters diff <task> <a> <b>                      metrics and config keys that differ

The registry defaults to the workspace's (`artifacts/registry`, or under $AISLE_WORKSPACE; $AISLE_REGISTRY
names one directly). Promote and rollback write the same `history.jsonl` line, under the same lock, as `POST /v1/adapters/{task}/promote|rollback`, with
the reason prefixed `cli:` (the HTTP routes prefix `admin:`). A running server serves the new
CURRENT within its `current_ttl_s`. Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from core import workspace
from core.registry import AdapterRegistry, RegistryError, UnknownTaskError, UnknownVersionError



def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _number(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _headline(info) -> str:
    m = {k: v for k, v in info.metrics.items() if k.startswith(("test_", "val_")) and isinstance(v, (int, float))}
    shown = ", ".join(f"{k} {_number(v)}" for k, v in sorted(m.items())[:3])
    return f"{info.version:<5} {info.created_at[:19]:<20} {info.lineage.get('trigger', '-'):<8} {shown}"


def list_all(reg: AdapterRegistry) -> None:
    tasks = reg.tasks()
    if not tasks:
        print(f"no adapters in {reg.root}")
    for task in tasks:
        current = reg.current(task)
        versions = reg.versions(task)
        print(f"{task}: CURRENT {current or '-'} of {len(versions)} version(s)")
        for info in versions:
            print(f"  {'*' if info.version == current else ' '} {_headline(info)}")


def show(reg: AdapterRegistry, task: str, version: str | None) -> None:
    info = reg.get(task, version)
    print(f"{info.model_id}{' (CURRENT)' if info.version == reg.current(task) else ''}, created {info.created_at}")
    print(f"  path     {info.uri or info.path}")
    for title, data in (("metrics", info.metrics), ("lineage", info.lineage)):
        for k, v in sorted(_flat(data).items()):
            print(f"  {title:<8} {k} = {_number(v) if not isinstance(v, (list, tuple)) else json.dumps(v)[:120]}")
    print(f"  config   {json.dumps(info.config, sort_keys=True)[:400]}")


def diff(reg: AdapterRegistry, task: str, a: str, b: str) -> None:
    va, vb = reg.get(task, a), reg.get(task, b)
    print(f"{task}: {a} -> {b}")
    for title, da, db in (("metrics", va.metrics, vb.metrics), ("config", va.config, vb.config),
                          ("lineage", va.lineage, vb.lineage)):
        fa, fb = _flat(da), _flat(db)
        changed = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        for k in changed:
            line = f"  {title:<8} {k}: {_number(fa.get(k, '-'))} -> {_number(fb.get(k, '-'))}"
            if isinstance(fa.get(k), (int, float)) and isinstance(fb.get(k), (int, float)):
                line += f" ({fb[k] - fa[k]:+.4f})"
            print(line[:200])
        if not changed:
            print(f"  {title:<8} (same)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aisle adapters", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--registry", default=os.environ.get("AISLE_REGISTRY") or workspace.path("registry"),
                        help="registry root, a path or s3://bucket/prefix (default: %(default)s)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every task: CURRENT and its versions")
    p = sub.add_parser("show", help="one version (default CURRENT)")
    p.add_argument("task")
    p.add_argument("version", nargs="?")
    p = sub.add_parser("promote", help="make a version CURRENT")
    p.add_argument("task")
    p.add_argument("version")
    p.add_argument("--reason", required=True)
    p = sub.add_parser("rollback", help="undo the last promotion still in effect")
    p.add_argument("task")
    p.add_argument("--reason", required=True)
    p = sub.add_parser("diff", help="what differs between two versions")
    p.add_argument("task")
    p.add_argument("a")
    p.add_argument("b")
    args = parser.parse_args(argv)
    reg = AdapterRegistry(args.registry)
    try:
        if args.action == "list":
            list_all(reg)
        elif args.action == "show":
            show(reg, args.task, args.version)
        elif args.action == "diff":
            diff(reg, args.task, args.a, args.b)
        elif args.action == "promote":
            previous = reg.current(args.task) if args.task in reg.tasks() else None
            reg.promote(args.task, args.version, reason=f"cli: {args.reason}")
            print(f"{args.task}: CURRENT {previous or '-'} -> {args.version} ({args.reason})")
        elif args.action == "rollback":
            previous = reg.current(args.task) if args.task in reg.tasks() else None
            current = reg.rollback(args.task, reason=f"cli: {args.reason}")
            print(f"{args.task}: CURRENT {previous} -> {current} (rollback: {args.reason})")
    except (UnknownTaskError, UnknownVersionError, RegistryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

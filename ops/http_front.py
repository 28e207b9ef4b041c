"""Load shedding at the HTTP front: HAProxy refuses past the ingress's in-flight limits, so a flood
never reaches the ingress's Python event loop.

The ingress refuses past `max_inflight_search` (and `max_inflight`) itself, but each refusal still
costs its one event loop a parsed request and a JSON answer, and under twice its capacity that queue
is where the accepted searches waited (benchmarks/search_bench.py: accepted p99 4.3 s, refusals 4.2
s, at 1,278 searches/s on 2 cores). Ray 2.60 writes HAProxy's config from its own template, which has
no per-route limit and turns HAProxy's own 503 into a 500; it runs whatever binary
RAY_SERVE_HAPROXY_BINARY_PATH names for every start and reload. `ops.runtime.haproxy_front_env`
names `aisle-haproxy` (`main` below): it adds the rules of `front_rules` to the config Ray wrote and
runs the real binary on that copy, with the same arguments and pid (exec).

The rules: per shedding route (serve.http_api.SHED_ROUTES, POST only, as the ingress sheds), a
counter of that route's requests in flight at the front (a stick table's `conn_cur`, released when
the answer ends); past the ingress's limit times the number of ingress replicas in the backend, the
front answers 503 at once with the ingress's own body (ErrorBody: error naming the limit and "at
the HTTP front", request_id), Retry-After and X-Request-ID. It carries no Server-Timing: no route ran.

The limits are the running ingress's: each Ingress replica writes them (`publish_limits`) to the
file AISLE_FRONT_LIMITS names when it starts, which is before Serve adds it to HAProxy's backend (a
reload). No file, or a config this cannot read: HAProxy runs on Ray's config unchanged (the ingress
still sheds), and says why on its stderr. Imports nothing but the standard library: it runs on
every HAProxy reload. It also keeps HAProxy's stats and metrics listeners on 127.0.0.1 when the
front itself is (`loopback_listeners`: Ray's template binds them to every interface).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

LIMITS_ENV = "AISLE_FRONT_LIMITS"
"""The JSON file the ingress writes its limits to and `aisle-haproxy` reads (one per Ray session)."""
BINARY_ENV = "AISLE_HAPROXY_BINARY"
"""The real HAProxy binary `aisle-haproxy` runs (resolved before RAY_SERVE_HAPROXY_BINARY_PATH names it)."""
SCRIPT = "aisle-haproxy"
RULES_MARK = "    # Aisle: in-flight limits per route at the front (ops/http_front.py)\n"


def publish_limits(routes: dict[str, str], limits: dict[str, int], retry_after_s: int) -> None:
    """Write the ingress's limits where `aisle-haproxy` reads them: `routes` path prefix -> limit key
    (a prefix ending in '/' covers the paths under it), `limits` key -> requests in flight per
    ingress replica (0: none). A no-op outside an HAProxy front (no AISLE_FRONT_LIMITS)."""
    target = os.environ.get(LIMITS_ENV)
    if not target:
        return
    doc = {"routes": routes, "limits": limits, "retry_after_s": int(retry_after_s)}
    path = Path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, path)   # whole or not at all: HAProxy may reload at any moment


def _sections(lines: list[str]) -> dict[str, tuple[int, int]]:
    """'frontend x' / 'backend y' -> (first line, end) of its body."""
    heads = [(i, line.strip()) for i, line in enumerate(lines) if line and not line[0].isspace() and line.strip()]
    return {name: (i + 1, heads[k + 1][0] if k + 1 < len(heads) else len(lines)) for k, (i, name) in enumerate(heads)}


def _replicas_for(path: str, lines: list[str], front: tuple[int, int], sections: dict[str, tuple[int, int]]) -> int:
    """Servers (not backups) of the backend the frontend's `use_backend` sends `path` to: the longest
    matching `acl is_<backend> path_beg <prefix>`."""
    body = lines[front[0]:front[1]]
    prefixes = {}
    for line in body:
        m = re.match(r"\s+acl is_(\S+) path_beg (\S+)\s*$", line)
        if m:
            prefixes[m.group(1)] = m.group(2)
    used = {m.group(1) for line in body if (m := re.match(r"\s+use_backend (\S+) if is_\1\s*$", line))}
    matching = [(len(p), name) for name, p in prefixes.items() if name in used and path.startswith(p)]
    if not matching:
        return 0
    backend = sections.get(f"backend {max(matching)[1]}")
    if backend is None:
        return 0
    return sum(1 for line in lines[backend[0]:backend[1]]
               if re.match(r"\s+server \S+ \S+", line) and not re.search(r"\sbackup\b", line))


def front_rules(config: str, limits: dict) -> str:
    """`config` (HAProxy's, as Ray wrote it) with the in-flight rules for `limits` (what
    `publish_limits` wrote) before the frontend's first `use_backend`; unchanged when no route has a
    limit or a replica to send to. ValueError if the config has no `frontend http_frontend`."""
    lines = config.splitlines(keepends=True)
    sections = _sections(lines)
    front = sections.get("frontend http_frontend")
    if front is None:
        raise ValueError("no 'frontend http_frontend' section in the config")
    at = next((i for i in range(*front) if lines[i].lstrip().startswith("use_backend ")), None)
    if at is None:
        return config   # no application deployed yet
    retry = int(limits.get("retry_after_s", 1))
    rules = []
    for n, (prefix, key) in enumerate(sorted(limits.get("routes", {}).items())):
        per_replica = int(limits.get("limits", {}).get(key, 0))
        if not re.fullmatch(r"/[A-Za-z0-9_./-]*", prefix) or not re.fullmatch(r"[a-z_]+", key):
            raise ValueError(f"route {prefix!r} -> {key!r} is not a plain path and key")
        replicas = _replicas_for(prefix, lines, front, sections)
        if per_replica <= 0 or replicas == 0:
            continue
        limit, route, over = per_replica * replicas, f"aisle_route_{n}", f"aisle_over_{n}"
        match = "path_beg" if prefix.endswith("/") else "path"
        body = (f'{{\\"error\\":\\"overloaded: {limit} {key} requests in flight at the HTTP front; retry shortly\\",'
                f'\\"request_id\\":\\"%[var(txn.aisle_rid),json]\\"}}')
        rules += [
            f"    acl {route} {match} {prefix}\n",
            f"    http-request track-sc2 str({key}) if METH_POST {route}\n",
            f"    acl {over} sc2_conn_cur gt {limit}\n",
            f"    http-request set-var(txn.aisle_rid) req.hdr(x-request-id),bytes(0,64) if METH_POST {route} {over}\n",
            f"    http-request set-var(txn.aisle_rid) uuid if METH_POST {route} {over} !{{ var(txn.aisle_rid) -m reg . }}\n",
            f"    http-request return status 503 content-type application/json hdr Retry-After {retry} "
            f'hdr X-Request-ID "%[var(txn.aisle_rid)]" lf-string "{body}" if METH_POST {route} {over}\n',
        ]
    if not rules:
        return config
    table = "    stick-table type string len 32 size 64 store conn_cur\n"
    return "".join(lines[:at] + [RULES_MARK, table, *rules] + lines[at:])


def loopback_listeners(config: str) -> str:
    """`config` with HAProxy's stats and metrics listeners (Ray's template binds them to every
    interface: `bind *:<port>`, `bind :<port>`) on 127.0.0.1 when the HTTP frontend itself listens
    on 127.0.0.1 only, as the embedded session's does; unchanged otherwise."""
    if not re.search(r"^frontend http_frontend\n(?:\s+#.*\n)*\s+bind 127\.0\.0\.1:\d+\s*$", config, re.M):
        return config
    return re.sub(r"^(\s+bind )\*?:(\d+)\s*$", r"\g<1>127.0.0.1:\2", config, flags=re.M)


def _patched_arguments(args: list[str]) -> list[str]:
    """HAProxy's arguments with `-f <config>` pointing at a copy whose listeners stay on loopback
    (`loopback_listeners`) and, once an ingress has published its limits, with the front's rules."""
    if "-f" not in args:
        return args
    i = args.index("-f") + 1
    config = Path(args[i])
    patched = loopback_listeners(config.read_text())
    source = os.environ.get(LIMITS_ENV)
    if source and Path(source).is_file():   # else no ingress has started yet
        patched = front_rules(patched, json.loads(Path(source).read_text()))
    target = config.with_name(config.name + ".aisle")
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", delete=False) as f:
        f.write(patched)
    os.replace(f.name, target)
    return [*args[:i], str(target), *args[i + 1:]]


def main() -> None:
    """`aisle-haproxy <haproxy arguments>`: exec the real HAProxy on Ray's config plus the front's rules."""
    binary = os.environ.get(BINARY_ENV, "")
    if not binary or Path(binary).name == SCRIPT:
        sys.exit(f"{SCRIPT}: {BINARY_ENV} must name the HAProxy binary to run")
    args = sys.argv[1:]
    try:
        args = _patched_arguments(args)
    except (OSError, ValueError) as e:   # json.JSONDecodeError is a ValueError
        print(f"{SCRIPT}: no in-flight limits at the front and listeners as Ray binds them ({e}); "
              f"HAProxy runs on Ray's config", file=sys.stderr)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()

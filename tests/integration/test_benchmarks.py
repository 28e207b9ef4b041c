"""Every benchmark script runs end to end in its `--smoke` mode (tiny random model, small data, about a
second of load per reading) and prints its summary lines: a benchmark that crashes fails here, not
in front of a reviewer.

The runs themselves (subprocesses, each with its own Ray; none may leave a process behind) are
tests/smoke_runs.py's: they start with the session, one at a time beside the rest of the suite, and
two at a time once this module's turn comes (tests/conftest.py runs it last). Each test waits for
its own script's output and checks it. Only the selected tests' scripts run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from smoke_runs import PARALLEL

ROOT = Path(__file__).resolve().parents[2]
BANNER = "SMOKE RUN (--smoke):"
NUMBER = r"-?\d+\.\d+"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]  # a test may wait for the runs before its own


@pytest.fixture(scope="module")
def smokes(smoke_runs):
    """script -> the Future of its smoke's stdout: the runs started with the session (tests/smoke_runs.py);
    from here on two at a time."""
    smoke_runs.run_with(PARALLEL)
    return smoke_runs.futures


def assert_lines(out: str, patterns: list[str]) -> None:
    assert out.lstrip().startswith(BANNER), out[:500]
    missing = [p for p in patterns if not re.search(p, out, re.M)]
    assert not missing, f"summary lines missing: {missing}\n--- stdout (end) ---\n{out[-4000:]}"


def test_prepare_bench_smoke(smokes):
    out = smokes["prepare_bench.py"].result()
    assert_lines(out, [
        rf"^pandas, single process\s+{NUMBER}\s+\d+$",
        rf"^multiprocessing pool of 2\s+{NUMBER}\s+\d+$",
        rf"^Ray Data prepare\s+{NUMBER}\s+\d+$",
        r"^\d+ blocks of [\d, ]+ rows \(rows_per_block=\d+\), the same for the pool and Ray$",
        r"^same rows kept per split on all three paths: True$",
        r"^ratio ray/pandas \(rows/s\): \d+\.\d\d\b",
        r"^ratio ray/pool \(rows/s\): \d+\.\d\d\b",
    ])


def test_update_cost_bench_smoke(smokes):
    out = smokes["update_cost_bench.py"].result()
    assert_lines(out, [
        rf"^training samples/s: all layers {NUMBER}, top 1 {NUMBER}; ratio top/all \d+\.\d\d$",
        rf"^gate pairs/s: full forward {NUMBER}, from the cached prefix {NUMBER}; ratio prefix/full \d+\.\d\d; "
        r"largest probability difference \S+; prefix \S+ MB for \d+ pairs$",
    ])


def test_train_bench_smoke(smokes):
    out = smokes["train_bench.py"].result()
    assert_lines(out, [
        rf"^plain PyTorch loop\s+{NUMBER}\s+{NUMBER}$",
        rf"^Ray Train \(1 worker\)\s+{NUMBER}\s+{NUMBER}$",
        r"^ratio ray/plain \(in-loop samples/s\): \d+\.\d{3}\b",
        r"^ratio ray/plain \(end-to-end wall, incl\. Ray start-up, validation, checkpoint\): \d+\.\d{3}$",
    ])


def test_scale_bench_smoke(smokes):
    """The multi-node cluster (a head and two worker nodes, `ops.local_cluster`): training with 1 and
    2 workers, serving on 1 and 2 nodes, a node lost under traffic (every failure a 503, never a
    500, and both replicas back), a training run resumed from its checkpoint after a lost node, and the
    FeedbackLog pinned to a node that is lost and comes back: no acknowledged event missing, none twice."""
    out = smokes["scale_bench.py"].result()
    assert_lines(out, [
        r"^cluster: a head and 2 worker nodes on 127\.0\.0\.1",
        r"^  1 worker\(s\): \d+\.\d samples/s in the loop",
        r"^  2 worker\(s\): \d+\.\d samples/s in the loop",
        r"^scale train: 2 workers / 1 worker samples/s \d+\.\d\d$",
        r"^scale serve: 2 nodes / 1 node inputs/s \d+\.\d\d; node lost: failed requests \d+ of \d+, "
        r"recovered in \d+\.\d s$",
        r"^  node 2 back: 2 replicas running and answering after \d+\.\d s; then (\d+) of \1 answered$",
    ])
    resumed = re.search(r"^scale train node lost: .* the run resumed at epoch (\d) of 3 and registered intent@v\d+ "
                        r"\(epoch \d\)", out, re.M)
    assert resumed and int(resumed.group(1)) >= 2, out[-4000:]  # from a checkpoint, not from scratch
    lost = re.search(r"^  node 2 killed mid-traffic: \d+ answered, (\d+) failed(?: \((.*)\))?;", out, re.M)
    assert lost, out[-4000:]
    assert not lost.group(2) or set(re.findall(r"x (\w+)", lost.group(2))) <= {"503"}, lost.group(0)
    log = re.search(r"^scale log node lost: (\d+) acknowledged before the node was lost, (\d+) of them missing after "
                    r"its return; \d+ sent while it was down: \d+ of \d+ calls answered then, \d+ events stored "
                    r"\d+\.\d s after it was started again; (\d+) stored twice$", out, re.M)
    assert log and int(log.group(1)) > 0 and log.group(2) == "0" and log.group(3) == "0", out[-4000:]


def test_serve_bench_smoke(smokes):
    out = smokes["serve_bench.py"].result()
    summary = out[out.index("== summary =="):] if "== summary ==" in out else ""
    assert summary, out[-4000:]
    assert_lines(out, [r"^  batch 64: +\d+ inputs/s$", r"^  merged int8: +\d+ inputs/s = \d+\.\d\dx; macro-F1"])
    assert_lines(BANNER + "\n" + summary, [
        *(rf"^ +{v} +{label}: served/raw \d+\.\d\d at \d+ clients \(target >= {t}\); half load "
          rf"(p50 \d+ ms, p95 \d+ ms, p99 \d+ ms|no answers) \(target p99 <= 100 ms\)$"
          for v in ("t1r2",) for label, t in (("1 input", "0.5"), ("32 inputs", "0.85"))),
        r"^  16 adapters / 1 adapter, 32 inputs: \d+\.\d\d \(target >= 0\.8\)$",
        r"^  16 adapters / 1 adapter, 1 input: \d+\.\d\d \(target >= 0\.8\)$",
        r"^  16 adapters / 1 adapter, 32 inputs \(per-adapter forwards\): \d+\.\d\d$",
        r"^  16 adapters / 1 adapter, 1 input \(per-adapter forwards\): \d+\.\d\d$",
        r"^  settings that won: \{'1 input': 't\dr\d', '32 inputs': 't\dr\d'\}$",
        r"^  int8/fp32 \(multi\): throughput \d+\.\d\dx, macro-F1 [+-]\d\.\d{4}, accuracy [+-]\d\.\d{4}$",
    ])


def test_freshness_bench_smoke(smokes):
    out = smokes["freshness_bench.py"].result()
    assert_lines(out, [  # the six summary lines, exactly as issue 13 has scripts check them
        rf"^fast path: event-to-effect p50 {NUMBER} s, p99 {NUMBER} s$",
        rf"^consolidation: window-to-serving p50 ({NUMBER}|nan) s over \d+ promoted updates$",
        r"^held-out affected queries nDCG@10: offline \d\.\d{4}, served \d\.\d{4} \(served - offline = [+-]\d\.\d{4}\)$",
        r"^untouched queries nDCG@10: offline \d\.\d{4}, served \d\.\d{4} \(served - offline = [+-]\d\.\d{4}\)$",
        r"^time to offline\+0\.05 on held-out affected queries: (\d+|not within \d+) s$",
        *(rf"^poisoning {name}: promoted \d+, attacked queries nDCG@10 change [+-]\d\.\d{{4}}, frozen after ({NUMBER}|n/a) s$"
          for name in ("flood", "adversarial", "stealthy")),
        r"^streamed \d+ sessions, \d+ events \(\d+ flagged\), \d+ searches; served nDCG@10",
        r"^where the gain comes from \(nDCG@10\): affected: offline",
    ])


def test_recommend_bench_smoke(smokes):
    out = smokes["recommend_bench.py"].result()
    assert_lines(out, [  # the four lines issue 15 has scripts check, exactly
        rf"^recommend test users \d+: NDCG@10 model {NUMBER}, popularity {NUMBER}, repeat {NUMBER}, "
        rf"item-knn {NUMBER}, zero-shot {NUMBER}$",
        rf"^recommend new-to-user NDCG@10: model {NUMBER}, best baseline {NUMBER} \((popularity|repeat|item-knn|zero-shot)\)$",
        rf"^recommend cold-start items HR@10: model {NUMBER}, item-knn {NUMBER}$",
        rf"^recommend serving: p99 {NUMBER} ms at half load, 1-user requests; catalog upsert to first answer {NUMBER} s$",
    ])


def test_search_bench_smoke(smokes):
    out = smokes["search_bench.py"].result()
    assert_lines(out, [  # the summary lines issue 19 has scripts check (the smoke serves two configurations)
        r"^search default: p50 \d+ ms, p99 \d+ ms at half load; [\d.]+ searches/s; nDCG@10 [\d.]+$",
        r"^search reference: p50 \d+ ms, p99 \d+ ms at half load; [\d.]+ searches/s; nDCG@10 [\d.]+$",
        r"^overload 2x: 503 share [\d.]+, 503 p99 (\d+|nan) ms, accepted p99 (\d+|nan) ms, recovered in ([\d.]+|nan) s$",
        # served as `aisle serve` serves on its own Ray: HAProxy in front (ops.runtime.haproxy_front_env); every
        # 503 of the flood is the ingress's limit (refused at the front or by the ingress), with Retry-After and the error body
        r"^relevance@v\d+ .* CPUs, HTTP front HAProxy; default: ",
        r"^  \d+ searches at [\d.]+/s \(sent at [\d.]+/s\): \d+ answered .*, \d+ refused \(503, 0 without Retry-After[;)]",
        # the default reranks with the student the smoke distilled (the real job), the reference with its teacher
        r"^    default: half load .* \(\d+ queries one at a time, by relevance_student@v1, \d+ in first-stage order\); "
        r"nDCG@10 of the half-load answers ([\d.]+|nan) \(first-stage ones included\)$",
        r"^    reference: half load .* \(\d+ queries one at a time, by relevance@v1, 0 in first-stage order\); "
        r"nDCG@10 of the half-load answers ([\d.]+|nan) \(first-stage ones included\)$",
        # where the slowest searches spent their time, from each answer's Server-Timing header
        r"^    default: slowest 1% at half load \(\d+ searches\): \d+ ms at the client = \d+ ms in the ingress "
        r"\(first stage \d+, rerank \d+\) \+ -?\d+ ms outside it \(HTTP front, queues, load generator\); (\d+ of them had a rerank budget, of \d+ ms on average|none of them had a rerank budget) \(.*\)$",
    ])
    assert "other 5xx" not in out
    assert "not JSON" not in out   # every 503 carries the error body


def test_generate_bench_smoke(smokes):
    out = smokes["generate_bench.py"].result()
    assert_lines(out, [  # the three kinds of line issue 17 has scripts check, exactly
        *(rf"^generate {task}: ROUGE-L model {NUMBER}, zero-shot {NUMBER}, retrieval {NUMBER}$"
          for task in ("describe", "summarize", "reply")),
        rf"^describe hallucination rate: model {NUMBER}, zero-shot {NUMBER}$",
        rf"^generate serving: served/raw tokens/s {NUMBER}, time to first token p50 \d+ ms$",
    ])


def test_rec_stream_bench_smoke(smokes):
    out = smokes["rec_stream_bench.py"].result()
    assert_lines(out, [  # the three summary lines the closing note quotes
        r"^recommend stream: \d+ sessions, \d+ events, \d+ next-item examples \(\d+ held out\); \d+ updates, "
        rf"\d+ promoted; update p50 ({NUMBER}|nan) s$",
        rf"^recommend stream probe shoppers taste NDCG@10: before {NUMBER}, after {NUMBER} \(after - before = [+-]\d\.\d{{4}}\)$",
        rf"^recommend stream offline validation NDCG@10: before {NUMBER}, after {NUMBER}$",
    ])


def test_the_gpu_script_parses_and_passes_only_flags_its_benchmarks_take():
    """benchmarks/gpu_run.sh runs only where a GPU is lent (no CI machine has one): here it is checked
    as far as a CPU can: bash parses it, and every benchmark it calls exists and accepts each flag it
    is given (`--help` of that script lists it)."""
    script = ROOT / "benchmarks" / "gpu_run.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    calls = re.findall(r"(benchmarks/\w+\.py)((?: --?[\w-]+(?: [\w,.]+)?)*)", script.read_text())
    assert {c for c, _ in calls} == {"benchmarks/train_bench.py", "benchmarks/serve_bench.py"}
    for path, args in calls:
        usage = subprocess.run([sys.executable, str(ROOT / path), "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120, check=True).stdout
        flags = re.findall(r"(--[\w-]+)", args)
        assert "--gpu" in flags
        assert all(flag in usage for flag in flags), (path, flags)

"""`aisle adapters`: the registry from the command line, with the admin routes' audit trail."""

from __future__ import annotations

from aisle.cli import main
from core.registry import ADAPTER_DIR, AdapterRegistry


def _registry(tmp_path) -> AdapterRegistry:
    reg = AdapterRegistry(tmp_path / "reg")
    for acc, lr in ((0.91, 1e-3), (0.93, 2e-3)):
        reg.create_version("intent", lambda d: (d / ADAPTER_DIR).mkdir(), config={"train": {"lr": lr}},
                           metrics={"test_accuracy": acc}, lineage={"trigger": "offline"})
    reg.promote("intent", "v1", reason="first")
    return reg


def test_list_show_and_diff(tmp_path, capsys):
    _registry(tmp_path)
    assert main(["adapters", "--registry", str(tmp_path / "reg"), "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "intent: CURRENT v1 of 2 version(s)"
    assert out[1].startswith("  * v1") and "test_accuracy 0.9100" in out[1] and out[2].startswith("    v2")
    assert main(["adapters", "--registry", str(tmp_path / "reg"), "show", "intent", "v2"]) == 0
    assert "metrics  test_accuracy = 0.9300" in capsys.readouterr().out
    assert main(["adapters", "--registry", str(tmp_path / "reg"), "diff", "intent", "v1", "v2"]) == 0
    out = capsys.readouterr().out
    assert "metrics  test_accuracy: 0.9100 -> 0.9300 (+0.0200)" in out and "config   train.lr: 0.0010 -> 0.0020 (+0.0010)" in out


def test_promote_and_rollback_write_the_history_the_admin_routes_write(tmp_path, capsys):
    reg = _registry(tmp_path)
    assert main(["adapters", "--registry", str(reg.root), "promote", "intent", "v2", "--reason", "better"]) == 0
    assert reg.current("intent") == "v2"
    assert capsys.readouterr().out.strip() == "intent: CURRENT v1 -> v2 (better)"
    assert main(["adapters", "--registry", str(reg.root), "rollback", "intent", "--reason", "bad week"]) == 0
    assert reg.current("intent") == "v1"
    last = reg.history("intent")[-2:]
    assert [(h["action"], h["to"], h["reason"]) for h in last] == [("promote", "v2", "cli: better"),
                                                                   ("rollback", "v1", "cli: bad week")]


def test_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    reg = _registry(tmp_path)
    assert main(["adapters", "--registry", str(reg.root), "promote", "intent", "v9", "--reason", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "v9" in err[0]
    assert main(["adapters", "--registry", str(reg.root), "show", "pricing"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert reg.current("intent") == "v1"

import os
import subprocess
import sys

import pytest

from saelab.cli import main
from saelab.cli.main import run_process

SUBCOMMANDS = ["demo", "models", "cache", "train", "eval", "circuits", "graph", "app"]


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "saelab", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name} " in out


@pytest.mark.parametrize("argv", [["--bogus"], ["demo", "--seed", "many"], ["nosuchcommand"],
                                  ["demo", "--port", "x"], ["train", "--width", "w"]])
def test_usage_errors_are_one_line_with_status_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "saelab" in err


def test_models_lists_bundled_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "saelab-random" in out and "saelab-tiny" in out and "saelab-tiny-attn" in out


def test_demo_writes_only_under_workspace(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_cli("demo", "--quick", "--model", "saelab-random", "--workspace", str(tmp_path / "ws"), "--no-app",
                     cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "ws" / "saelab.duckdb").exists()
    assert "recorded in" in result.stdout

    from saelab.db import ResultsStore

    runs = ResultsStore(tmp_path / "ws" / "saelab.duckdb").runs()
    assert set(runs["status"]) == {"done"}
    assert {"demo", "train", "eval"} <= set(runs["kind"])
    for table in ("cached_sites", "saes", "training_metrics", "eval_metrics", "features"):
        assert not ResultsStore(tmp_path / "ws" / "saelab.duckdb").select(table, limit=1).empty, table
    # dashboards for every SAE the demo trains; the attn_z SAE's carry head attribution
    from saelab.db import queries as q

    saes = q.list_saes(ResultsStore(tmp_path / "ws" / "saelab.duckdb"))
    assert len(saes) == 5 and (saes["dashboards"] == saes["d_sae"]).all(), saes[["sae_id", "dashboards"]]
    store = ResultsStore(tmp_path / "ws" / "saelab.duckdb")
    attn = saes.loc[saes["site"].str.endswith("attn_z"), "sae_id"].item()
    assert q.get_feature(store, attn, 0).head_attribution is not None


def test_workspace_from_environment(tmp_path):
    result = run_cli("demo", "--quick", "--no-circuits", "--model", "saelab-random", "--no-app", cwd=tmp_path,
                     env={"SAELAB_WORKSPACE": str(tmp_path / "envws")})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "envws" / "saelab.duckdb").exists()
    assert not (tmp_path / "saelab-workspace").exists()


def test_circuits_list_methods_needs_no_task(capsys):
    assert main(["circuits", "--list-methods"]) == 0
    out = capsys.readouterr().out
    assert "sae_codes" in out and "eap" in out
    assert main(["circuits"]) == 2
    assert "give --task" in capsys.readouterr().err


class Ended(Exception):
    """Stands in for os._exit in a process of a process group."""


@pytest.mark.parametrize(("run", "code", "traceback_shown"), [
    (lambda: 0, 0, False),
    (lambda: 2, 2, False),
    (lambda: sys.exit(3), 3, False),
    (lambda: sys.exit(None), 0, False),
    (lambda: 1 / 0, 1, True),
])
def test_a_process_of_a_process_group_ends_with_the_commands_status(monkeypatch, capsys, run, code,
                                                                      traceback_shown):
    import saelab.training.distributed as distributed

    def end(status):
        raise Ended(status)

    monkeypatch.setattr(distributed, "current_world", lambda: distributed.World(1, 2))
    monkeypatch.setattr(distributed, "exit_process", end)
    with pytest.raises(Ended) as ended:
        run_process(run)
    assert ended.value.args == (code,)
    assert ("ZeroDivisionError" in capsys.readouterr().err) is traceback_shown


def test_outside_a_process_group_a_command_returns_or_raises_as_usual():
    assert run_process(lambda: 4) == 4
    with pytest.raises(ZeroDivisionError):
        run_process(lambda: 1 / 0)
    with pytest.raises(SystemExit):
        run_process(lambda: sys.exit(3))


def test_a_message_given_to_sys_exit_in_a_process_group_is_printed(monkeypatch, capsys):
    import saelab.training.distributed as distributed

    def end(status):
        raise Ended(status)

    monkeypatch.setattr(distributed, "current_world", lambda: distributed.World(0, 2))
    monkeypatch.setattr(distributed, "exit_process", end)
    with pytest.raises(Ended) as ended:
        run_process(lambda: sys.exit("saelab train: error: bad input"))
    assert ended.value.args == (1,) and "bad input" in capsys.readouterr().err

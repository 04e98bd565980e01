"""The CLI with several coordinators of one registry (issue 17): the first dead, every command goes to the
second; a write whose answer was lost is not sent twice (the one rule: wgmesh/failover.py, api_client.py)."""

from __future__ import annotations

from pathlib import Path

from cli_harness import base_env, run_cli
from failover_harness import AnswerDropper, coordinators
from pg_harness import Cluster


def test_the_cli_fails_over_to_the_second_coordinator(pg_cluster: Cluster, tmp_path: Path) -> None:
    with coordinators(pg_cluster, tmp_path) as pair:
        env = base_env(tmp_path)
        assert pair.a.admin_token is not None
        env |= {"WGMESH_TOKEN": pair.a.admin_token, "WGMESH_PIN": str(pair.a.pin)}
        assert pair.a.proc is not None
        pair.a.proc.kill()
        pair.a.proc.wait()
        env["WGMESH_URL"] = f"{pair.a.url},{pair.b.url}"
        # a write (refused by A's closed port: surely not done there) and a read, both served by B
        made = run_cli("tokens", "create", "--json", env=env).json()
        assert made["token"]
        listed = run_cli("tokens", "--json", env=env).json()["tokens"]
        assert [t["id"] for t in listed] == [made["id"]]
        flags = ("--coordinator", pair.a.url, "--coordinator", pair.b.url)
        assert run_cli("status", "--json", *flags, env={**env, "WGMESH_URL": ""}).code == 0
        # one URL: as before, one line naming it
        alone = run_cli("status", env={**env, "WGMESH_URL": pair.a.url})
        assert alone.code == 1
        assert pair.a.url in alone.one_line_error()


def test_a_write_whose_answer_was_lost_is_not_sent_again(pg_cluster: Cluster, tmp_path: Path) -> None:
    with coordinators(pg_cluster, tmp_path, "--insecure-http") as pair:
        env = base_env(tmp_path)
        assert pair.a.admin_token is not None
        env["WGMESH_TOKEN"] = pair.a.admin_token
        with AnswerDropper(("127.0.0.1", pair.a.port)) as dropper:
            env["WGMESH_URL"] = f"{dropper.url},{pair.b.url}"
            lost = run_cli("tokens", "create", env=env)
            assert lost.code == 1
            assert dropper.url in lost.one_line_error()
            assert dropper.dropped == 1
        env["WGMESH_URL"] = pair.b.url
        # made once, on A: a second try on B would have made two
        assert len(run_cli("tokens", "--json", env=env).json()["tokens"]) == 1

"""`iadm fleet collect`: refusals name what is wrong, before anything runs."""
from iadm.fleet.command import main


def test_collect_needs_a_database(capsys, monkeypatch):
    monkeypatch.delenv("IADM_FLEET_DB", raising=False)
    assert main(["collect"]) == 2
    assert "--db or IADM_FLEET_DB" in capsys.readouterr().err


def test_a_bad_fleet_section_is_named_by_file_and_key(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text("[fleet]\nredis_port = 0\n")
    assert main(["collect", "--db", "postgresql://x@127.0.0.1:1/x", "--config", str(config)]) == 1
    assert f"{config}: fleet.redis_port has a bad value 0" in capsys.readouterr().err


def test_an_unreachable_database_is_named_without_its_password(capsys):
    assert main(["collect", "--db", "postgresql://u:secret@127.0.0.1:1/x"]) == 1
    err = capsys.readouterr().err
    assert "postgresql://u:***@127.0.0.1:1/x" in err and "secret" not in err


def test_bad_numbers_are_refused(capsys):
    assert main(["collect", "--db", "postgresql://x@h/x", "--retention-days", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err

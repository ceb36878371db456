"""The operator decides what visitors of the app may do: remote code, folders, downloads."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import shown
from streamlit.testing.v1 import AppTest

from embedgen.errors import BadConfig, EmbedgenError, NotAllowed
from embedgen.models import load_encoder
from embedgen.paths import hub_cache_dir, workspace
from embedgen.settings import operator_settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_VARIABLES = (
    "EMBEDGEN_ALLOW_REMOTE_CODE",
    "EMBEDGEN_ALLOWED_ROOTS",
    "EMBEDGEN_ALLOW_DOWNLOADS",
    "EMBEDGEN_WORKSPACES",
    "EMBEDGEN_USER_HEADER",
)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config asks for its own code; that code writes ``marker``."""
    folder.mkdir(parents=True)
    config = {
        "model_type": "embedgen-custom",
        "auto_map": {"AutoConfig": "modeling.CustomConfig", "AutoModel": "modeling.CustomModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling.py").write_text(f"open({str(marker)!r}, 'w').write('remote code ran')\n")
    return folder


# -- Settings -------------------------------------------------------------------------------


def test_by_default_no_remote_code_and_only_the_hub_cache_and_home(home: Path) -> None:
    settings = operator_settings()
    assert settings.allow_remote_code is False
    assert settings.allowed_roots == (hub_cache_dir(), home)
    assert settings.allow_downloads is True


def test_settings_file_is_read_and_the_environment_wins(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "config.toml").write_text(
        'allow_remote_code = true\nallowed_roots = ["/srv/models"]\nallow_downloads = false\n'
    )
    settings = operator_settings()
    assert settings.allow_remote_code is True
    assert settings.allowed_roots == (Path("/srv/models"),)
    assert settings.allow_downloads is False
    monkeypatch.setenv("EMBEDGEN_ALLOW_REMOTE_CODE", "0")
    monkeypatch.setenv("EMBEDGEN_ALLOWED_ROOTS", os.pathsep.join(["/a", "/b"]))
    settings = operator_settings()
    assert settings.allow_remote_code is False
    assert settings.allowed_roots == (Path("/a"), Path("/b"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allow_remote_code = 'maybe'", "allow_remote_code must be true or false"),
        ("allow_remote_code = [", "cannot be read"),
        ("allowed_roots = '/srv'", "allowed_roots must be a list"),
        ("alow_remote_code = true", "does not know: alow_remote_code"),
        ("workspaces = 'maybe'", "workspaces must be true or false"),
        ("user_header = 'X User'", "user_header must be the name of a request header"),
    ],
)
def test_a_broken_settings_file_is_named_with_what_is_wrong(
    home: Path, text: str, expected: str
) -> None:
    (home / "config.toml").write_text(text + "\n")
    with pytest.raises(BadConfig, match=expected) as err:
        operator_settings()
    assert "config.toml" in str(err.value)


def test_workspaces_are_off_until_the_operator_turns_them_on(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = operator_settings()
    assert settings.workspaces is False and settings.user_header == "X-Forwarded-User"
    (home / "config.toml").write_text('workspaces = "on"\nuser_header = "X-Remote-User"\n')
    settings = operator_settings()
    assert settings.workspaces is True and settings.user_header == "X-Remote-User"
    monkeypatch.setenv("EMBEDGEN_WORKSPACES", "off")
    monkeypatch.setenv("EMBEDGEN_USER_HEADER", "X-Auth-Request-Email")
    settings = operator_settings()
    assert settings.workspaces is False and settings.user_header == "X-Auth-Request-Email"


def test_a_bad_environment_flag_names_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDGEN_ALLOW_REMOTE_CODE", "sure")
    with pytest.raises(BadConfig, match="EMBEDGEN_ALLOW_REMOTE_CODE"):
        operator_settings()


# -- Folders --------------------------------------------------------------------------------


def test_folders_outside_the_roots_and_missing_folders_get_one_message(
    home: Path, tmp_path: Path
) -> None:
    settings = operator_settings()
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(NotAllowed) as existing:
        settings.allowed_folder(str(outside), "matrix folder")
    with pytest.raises(NotAllowed) as missing:
        settings.allowed_folder(str(tmp_path / "nowhere"), "matrix folder")
    assert str(existing.value).replace(str(outside), "X") == str(missing.value).replace(
        str(tmp_path / "nowhere"), "X"
    ), "an existing and a missing folder must not be told apart"
    inside = home / "matrices" / "m"
    inside.mkdir(parents=True)
    assert settings.allowed_folder(str(inside), "matrix folder") == inside.resolve()


def test_a_link_out_of_a_root_or_dot_dot_does_not_escape_it(home: Path, tmp_path: Path) -> None:
    settings = operator_settings()
    secret = tmp_path / "secret"
    secret.mkdir()
    (home / "link").symlink_to(secret)
    with pytest.raises(NotAllowed):
        settings.allowed_folder(str(home / "link"), "matrix folder")
    with pytest.raises(NotAllowed):
        settings.allowed_folder(f"{home}/../secret", "matrix folder")


def test_a_visitor_opens_their_own_workspace_and_no_one_elses(home: Path) -> None:
    settings = operator_settings()
    alices = workspace("alice@example.com") / "matrices" / "m"
    alices.mkdir(parents=True)
    assert settings.allowed_folder(str(alices), "matrix folder", "alice@example.com") == (
        alices.resolve()
    )
    messages = []
    for spec, user in (
        (str(alices), "bob@example.com"),
        (str(alices), None),  # workspaces turned off again: none of them is open
        (str(home / "users"), "bob@example.com"),
        (str(home / "nowhere"), "bob@example.com"),
    ):
        with pytest.raises(NotAllowed) as err:
            settings.allowed_folder(spec, "matrix folder", user)
        messages.append(str(err.value).replace(spec, "X"))
    assert len(set(messages)) == 1, "another user's folder must read as a missing one"
    shared = home / "matrices" / "m"
    shared.mkdir(parents=True)
    assert settings.allowed_folder(str(shared), "matrix folder", "bob@example.com") == (
        shared.resolve()
    ), "the shared home stays open as the allowed roots say"


def test_model_folders_in_another_users_workspace_are_refused_alike(
    home: Path, tiny_model_dir: Path
) -> None:
    roots = operator_settings().allowed_roots
    alices = workspace("alice@example.com") / "runs" / "r" / "encoder"
    shutil.copytree(tiny_model_dir, alices)
    encoder = load_encoder(
        str(alices), allow_download=False, allowed_roots=roots, user="alice@example.com"
    )
    assert encoder.info.architecture == "BertModel"
    messages = []
    for spec in (str(alices), "/no/such/folder"):
        with pytest.raises(NotAllowed) as err:
            load_encoder(spec, allow_download=False, allowed_roots=roots, user="bob@example.com")
        messages.append(str(err.value).replace(spec, "X"))
    assert messages[0] == messages[1]


def test_model_folders_outside_the_roots_are_refused_alike(
    home: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    roots = operator_settings().allowed_roots
    messages = []
    for spec in (str(tiny_model_dir), "/etc", "/no/such/folder", "~/.ssh", "../.."):
        with pytest.raises(NotAllowed) as err:
            load_encoder(spec, allow_download=False, allowed_roots=roots)
        messages.append(str(err.value).replace(spec, "X"))
    assert len(set(messages)) == 1, messages
    inside = home / "models" / "tiny"
    shutil.copytree(tiny_model_dir, inside)
    encoder = load_encoder(str(inside), allow_download=False, allowed_roots=roots)
    assert encoder.info.architecture == "BertModel"


def test_a_hub_id_is_not_taken_for_a_folder_outside_the_roots(
    home: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder in the server's working directory with a hub id's name stays unopened.
    shutil.copytree(tiny_model_dir, tmp_path / "acme-tiny")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EmbedgenError) as err:
        load_encoder(
            "acme-tiny", allow_download=False, allowed_roots=operator_settings().allowed_roots
        )
    assert "Hugging Face cache" in str(err.value)
    assert load_encoder("acme-tiny", allow_download=False).info.architecture == "BertModel"


def test_a_hub_id_with_a_dot_is_looked_up_in_the_cache(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny-v1.5"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("c" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = load_encoder("acme/tiny-v1.5", allow_download=False)
    assert encoder.info.source == "hub cache"


# -- The app --------------------------------------------------------------------------------


@pytest.fixture()
def app(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("EMBEDGEN_ALLOWED_ROOTS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Model.py")
    at.run()
    assert not at.exception
    return at


def test_visitors_get_no_remote_code_checkbox_unless_the_operator_allows_it(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not [c for c in app.checkbox if c.key == "model_remote"]
    assert any("operator" in shown(c) and "own code" in shown(c) for c in app.caption)
    monkeypatch.setenv("EMBEDGEN_ALLOW_REMOTE_CODE", "1")
    app.run()
    assert [c for c in app.checkbox if c.key == "model_remote"]


def test_a_visitor_cannot_make_the_server_run_a_models_code(app: AppTest, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    folder = remote_code_model(tmp_path / "remote", marker)
    # Even a session that asks for remote code (as the checkbox would) does not get it.
    app.session_state["model_loaded"] = (str(folder), True)
    app.run()
    app.radio(key="model_source").set_value("Folder on this machine").run()
    app.text_input(key="model_folder").input(str(folder)).run()
    next(b for b in app.button if b.label == "Load model").click().run()
    assert not app.exception
    assert "own code" in " ".join(shown(e) for e in app.error)
    assert not marker.exists(), "the model's own code ran on the server"


def test_the_model_page_does_not_tell_missing_folders_from_forbidden_ones(
    app: AppTest,
) -> None:
    app.radio(key="model_source").set_value("Folder on this machine").run()
    said = []
    for spec in ("/etc", "/no/such/folder"):
        app.text_input(key="model_folder").input(spec).run()
        next(b for b in app.button if b.label == "Load model").click().run()
        said.append(" ".join(shown(e) for e in app.error).replace(spec, "X"))
    assert said[0] == said[1] and "operator" in said[0]
    assert "config.json" not in said[0]


def test_explore_opens_no_matrix_folder_outside_the_roots(app: AppTest) -> None:
    app.switch_page("pages/5_Explore.py")
    app.run()
    app.text_input(key="explore_open").input("/etc").run()
    next(b for b in app.button if b.label == "Open").click().run()
    message = " ".join(shown(e) for e in app.error)
    assert "not a matrix folder you can open here" in message


# -- The server -----------------------------------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port``, read from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1, as /proc has them


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_the_app_listens_on_this_machine_only_unless_the_operator_says_so(
    tmp_path: Path,
) -> None:
    from browser_support import StreamlitServer

    server = StreamlitServer(
        tmp_path / "listen.log",
        {"EMBEDGEN_HOME": str(tmp_path / "home"), "EMBEDGEN_NO_WARMUP": "1"},
        address=None,  # as `streamlit run app.py` from the project folder
    )
    try:
        server.wait_healthy()
        addresses = _listening_addresses(server.port)
    finally:
        server.stop()
    assert addresses, "the server was not found listening"
    assert addresses <= LOOPBACK, f"listening beyond this machine: {addresses}"


def test_a_broken_settings_file_stops_the_app_with_a_note_not_a_traceback(
    app: AppTest, home: Path
) -> None:
    (home / "config.toml").write_text("allow_remote_code = [\n", encoding="utf-8")
    app.run()
    assert not app.exception
    message = " ".join(shown(e) for e in app.error)
    assert "settings cannot be read" in message and "server log" in message
    assert str(home) not in message, "a server path reached the visitor"

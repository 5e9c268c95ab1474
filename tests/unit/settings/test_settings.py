"""Configuration: the YAML file, environment overrides, and errors that name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.settings import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, data: object, name: str = "lookout.yml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def problems(path: Path | None = None, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ or {})
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# -- sources ---------------------------------------------------------------------------


def test_no_file_and_no_environment_gives_the_defaults():
    s = load_settings(None, {})
    assert s == Settings()
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.protocol) == ("127.0.0.1", 1883, 5)
    assert s.mqtt.topic_prefix == "lookout" and s.frigate.topic_prefix == "frigate"
    assert s.llm.providers == {} and s.users == {}


def test_the_shipped_example_file_is_valid():
    s = load_settings(REPO / "lookout.example.yml", {})
    assert s.mqtt.client_id == "lookout"
    assert s.store.url == "sqlite:///data/lookout.db"


def test_values_come_from_the_file(tmp_path):
    path = write(
        tmp_path,
        {
            "mqtt": {"host": "broker", "port": 8883, "tls": True, "topic_prefix": "home/lookout/"},
            "frigate": {"cameras": {"front_door": {"friendly_name": "Front door"}}},
            "users": {"alice": {"role": "admin"}, "kids": {"cameras": ["backyard"]}},
            "log": {"level": "DEBUG"},
        },
    )
    s = load_settings(path, {})
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls) == ("broker", 8883, True)
    assert s.mqtt.topic_prefix == "home/lookout"  # a trailing slash is dropped
    assert s.frigate.cameras["front_door"].friendly_name == "Front door"
    assert s.users["alice"].role == "admin" and s.users["alice"].cameras == "all"
    assert s.users["kids"].role == "viewer" and s.users["kids"].cameras == ["backyard"]
    assert s.log.level == "debug"


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_settings(write(tmp_path, ""), {}) == Settings()


def test_environment_beats_the_file(tmp_path):
    path = write(tmp_path, {"mqtt": {"host": "filehost", "port": 1883}})
    s = load_settings(path, {"LOOKOUT_MQTT__PORT": "1884"})
    assert s.mqtt.port == 1884
    assert s.mqtt.host == "filehost"  # the rest of the section survives the merge


def test_nested_environment_override_of_a_provider_from_the_file(tmp_path):
    path = write(
        tmp_path,
        {"llm": {"providers": {"local": {"base_url": "http://ollama:11434/v1", "model": "a"}}}},
    )
    s = load_settings(path, {"LOOKOUT_LLM__PROVIDERS__LOCAL__MODEL": "qwen2.5vl:7b"})
    local = s.llm.providers["local"]
    assert local.model == "qwen2.5vl:7b"
    assert local.base_url == "http://ollama:11434/v1"


def test_a_provider_can_come_from_the_environment_alone():
    s = load_settings(
        None,
        {
            "LOOKOUT_LLM__PROVIDERS__CLOUD__MODEL": "gpt-4o-mini",
            "LOOKOUT_LLM__PROVIDERS__CLOUD__ROLES": "[chat]",
            "LOOKOUT_LLM__PROVIDERS__CLOUD__API_KEY": "sk-test",
        },
    )
    cloud = s.llm.providers["cloud"]
    assert cloud.model == "gpt-4o-mini" and cloud.roles == ["chat"]
    assert cloud.api_key is not None and cloud.api_key.get_secret_value() == "sk-test"


def test_environment_values_are_typed_as_yaml_scalars():
    s = load_settings(
        None,
        {
            "LOOKOUT_MQTT__TLS": "true",
            "LOOKOUT_MQTT__PORT": "1884",
            "LOOKOUT_MQTT__RECONNECT_MIN_S": "0.25",
            "LOOKOUT_MQTT__USERNAME": "null",
            "LOOKOUT_FRIGATE__URL": "~",
            "LOOKOUT_FRIGATE__CAMERA_MONITORING": "no",
            "LOOKOUT_LLM__PROVIDERS__X__MODEL": "m",
            "LOOKOUT_LLM__PROVIDERS__X__EXTRA_BODY": "{temperature: 0.2, top_k: 20}",
        },
    )
    assert s.mqtt.tls is True and s.mqtt.port == 1884 and s.mqtt.reconnect_min_s == 0.25
    assert s.mqtt.username is None and s.frigate.url is None
    assert s.frigate.camera_monitoring is False
    # `Any` fields keep the YAML type: a number reaches the model server as a number.
    assert s.llm.providers["x"].extra_body == {"temperature": 0.2, "top_k": 20}


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        # YAML 1.1 would read these as 123456, 7 (octal), a date, a bool and a float.
        ("LOOKOUT_MQTT__PASSWORD", "123456", "123456"),
        ("LOOKOUT_MQTT__CLIENT_ID", "007", "007"),
        ("LOOKOUT_MQTT__USERNAME", "yes", "yes"),
        ("LOOKOUT_LLM__PROVIDERS__AZ__API_VERSION", "2024-10-21", "2024-10-21"),
        ("LOOKOUT_LLM__PROVIDERS__AZ__MODEL", "1.10", "1.10"),
        ("LOOKOUT_MQTT__PASSWORD", "[not, a, list]", "[not, a, list]"),
    ],
)
def test_text_settings_keep_the_exact_spelling_of_an_environment_value(name, raw, expected):
    env = {"LOOKOUT_LLM__PROVIDERS__AZ__MODEL": "m", name: raw}
    s = load_settings(None, env)
    values = {
        "LOOKOUT_MQTT__PASSWORD": lambda: s.mqtt.password and s.mqtt.password.get_secret_value(),
        "LOOKOUT_MQTT__CLIENT_ID": lambda: s.mqtt.client_id,
        "LOOKOUT_MQTT__USERNAME": lambda: s.mqtt.username,
        "LOOKOUT_LLM__PROVIDERS__AZ__API_VERSION": lambda: s.llm.providers["az"].api_version,
        "LOOKOUT_LLM__PROVIDERS__AZ__MODEL": lambda: s.llm.providers["az"].model,
    }
    assert values[name]() == expected


def test_the_exact_spelling_fallback_does_not_hide_other_problems(tmp_path):
    path = write(tmp_path, {"mqtt": {"port": 99999}})
    found = problems(path, {"LOOKOUT_MQTT__PASSWORD": "123456", "LOOKOUT_MQTT__KEEPALIVE_S": "1"})
    assert found == [
        "mqtt.port: Input should be less than or equal to 65535",
        "mqtt.keepalive_s: Input should be greater than or equal to 5",
    ]


def test_a_wrong_environment_value_is_still_reported_with_its_key():
    assert problems(None, {"LOOKOUT_MQTT__PORT": "lots"}) == [
        "mqtt.port: Input should be a valid integer, unable to parse string as an integer"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "LOOKOUT_MQTT_PORT",  # one underscore: not a key path
        "OTHER_MQTT__PORT",
        "LOOKOUT_MQTT____PORT",  # empty level
        "LOOKOUT_MQTT__",
    ],
)
def test_environment_names_that_are_not_key_paths_are_ignored(name):
    assert load_settings(None, {name: "1"}) == Settings()


def test_environment_names_are_case_insensitive():
    assert load_settings(None, {"LOOKOUT_Mqtt__Port": "2000"}).mqtt.port == 2000


def test_unknown_environment_key_is_an_error_with_its_path():
    assert problems(None, {"LOOKOUT_MQTT__COLOUR": "blue"}) == ["mqtt.colour: unknown key"]


def test_lookout_config_is_used_when_no_path_is_given(tmp_path):
    path = write(tmp_path, {"mqtt": {"port": 1999}})
    assert load_settings(None, {"LOOKOUT_CONFIG": str(path)}).mqtt.port == 1999


def test_an_explicit_path_beats_lookout_config(tmp_path):
    mine = write(tmp_path, {"mqtt": {"port": 2001}}, "mine.yml")
    other = write(tmp_path, {"mqtt": {"port": 2002}}, "other.yml")
    assert load_settings(mine, {"LOOKOUT_CONFIG": str(other)}).mqtt.port == 2001


def test_the_process_environment_is_read_when_none_is_given(tmp_path, monkeypatch):
    path = write(tmp_path, {"mqtt": {"port": 2003}})
    monkeypatch.setenv("LOOKOUT_CONFIG", str(path))
    monkeypatch.setenv("LOOKOUT_MQTT__HOST", "from-env")
    s = load_settings()
    assert (s.mqtt.host, s.mqtt.port) == ("from-env", 2003)


# -- problems --------------------------------------------------------------------------


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    path = write(
        tmp_path,
        {
            "mqtt": {"port": 99999, "colour": "blue", "tls": "sometimes"},
            "chat": {"max_concurrent": 0},
            "llm": {"providers": {"local": {"base_url": "http://h"}}},
            "log": {"level": "loud"},
            "shiny": True,
        },
    )
    found = problems(path)
    assert len(found) == 7, found
    by_key = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in found}
    assert by_key["mqtt.port"] == "Input should be less than or equal to 65535"
    assert by_key["mqtt.colour"] == "unknown key"
    assert by_key["mqtt.tls"].startswith("Input should be a valid boolean")
    assert by_key["chat.max_concurrent"] == "Input should be greater than or equal to 1"
    assert by_key["llm.providers.local.model"] == "required"
    assert by_key["log.level"].startswith("Input should be 'debug'")
    assert by_key["shiny"] == "unknown key"


def test_a_section_that_is_not_a_mapping_is_reported(tmp_path):
    assert problems(write(tmp_path, "mqtt: 5\n")) == [
        "mqtt: Input should be a valid dictionary or instance of MqttSettings"
    ]


@pytest.mark.parametrize("bad", ["bad name", "a/b", "x" * 65, "alice\n", ""])
def test_user_names_must_be_one_topic_level(tmp_path, bad):
    found = problems(write(tmp_path, {"users": {bad: {"role": "admin"}}}))
    assert len(found) == 1
    assert found[0].startswith(f"users.{bad}.[key]: String should")


@pytest.mark.parametrize("prefix", ["a/#", "lookout/+", "/lookout", ""])
def test_topic_prefix_must_be_a_plain_topic(tmp_path, prefix):
    found = problems(write(tmp_path, {"mqtt": {"topic_prefix": prefix}}))
    assert found == [
        "mqtt.topic_prefix: Value error, must be a plain topic level path without wildcards"
    ]


def test_a_missing_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yml"
    found = problems(missing)
    assert found == [f"{missing}: cannot read: No such file or directory"]


def test_a_directory_is_a_config_error(tmp_path):
    (found,) = problems(tmp_path)
    assert found.startswith(f"{tmp_path}: cannot read:")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "binary.yml"
    path.write_bytes(b"\xff\xfe\x00mqtt: {}")
    (found,) = problems(path)
    assert found.startswith(f"{path}: ")
    assert "UTF-8" in found


@pytest.mark.parametrize("text", ["- mqtt\n- log\n", "just a string\n", "42\n"])
def test_the_top_level_must_be_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}: the top level must be a mapping of sections"]


def test_invalid_yaml_is_a_config_error_with_its_position(tmp_path):
    path = write(tmp_path, "mqtt:\n  port: [1883\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}: not valid YAML:")
    assert "line" in found


# -- field rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("3.1.1", 311),
        ("311", 311),
        (311, 311),
        (4, 311),
        ("4", 311),
        (5, 5),
        ("5", 5),
        ("5.0", 5),
        ("v5", 5),
    ],
)
def test_protocol_aliases(tmp_path, given, expected):
    assert (
        load_settings(write(tmp_path, {"mqtt": {"protocol": given}}), {}).mqtt.protocol == expected
    )


def test_protocol_alias_from_the_environment():
    assert load_settings(None, {"LOOKOUT_MQTT__PROTOCOL": "3.1.1"}).mqtt.protocol == 311


@pytest.mark.parametrize("given", [3, "3.1", 7, "mqtt5", True])
def test_unknown_protocols_are_rejected(tmp_path, given):
    (found,) = problems(write(tmp_path, {"mqtt": {"protocol": given}}))
    assert found.startswith("mqtt.protocol: ")


def test_one_provider_per_role_is_enforced(tmp_path):
    path = write(
        tmp_path,
        {
            "llm": {
                "providers": {
                    "big": {"model": "a", "roles": ["chat", "vision"]},
                    "small": {"model": "b", "roles": ["vision"]},
                }
            }
        },
    )
    assert problems(path) == ["llm: Value error, role 'vision' is held by both 'big' and 'small'"]


def test_providers_with_distinct_roles_are_fine(tmp_path):
    path = write(
        tmp_path,
        {
            "llm": {
                "providers": {
                    "talker": {"model": "a", "roles": ["chat"]},
                    "looker": {"model": "b", "roles": ["vision"], "kind": "azure"},
                }
            }
        },
    )
    providers = load_settings(path, {}).llm.providers
    assert providers["talker"].roles == ["chat"] and providers["looker"].kind == "azure"


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.mqtt.port = 1  # type: ignore[misc]


def test_secrets_never_appear_in_repr_or_json(tmp_path):
    path = write(
        tmp_path,
        {
            "mqtt": {"username": "lookout", "password": "hunter2-mqtt"},
            "llm": {"providers": {"p": {"model": "m", "api_key": "sk-live-abcdef"}}},
        },
    )
    s = load_settings(path, {"LOOKOUT_LLM__PROVIDERS__P__API_KEY": "sk-env-123456"})
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), repr(s.mqtt)):
        assert "hunter2-mqtt" not in text
        assert "sk-live-abcdef" not in text and "sk-env-123456" not in text
    assert "lookout" in repr(s.mqtt)  # the redaction is of secrets only
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "hunter2-mqtt"
    provider_key = s.llm.providers["p"].api_key
    assert provider_key is not None and provider_key.get_secret_value() == "sk-env-123456"


def test_config_errors_do_not_echo_the_rejected_value(tmp_path):
    found = problems(write(tmp_path, {"mqtt": {"password": {"nested": "hunter2-mqtt"}}}))
    assert found == ["mqtt.password: Input should be a valid string"]

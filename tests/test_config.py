"""Config parsing: LimaCharlie's documents verbatim, every error named, no secret ever shown."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from cloudtrail_adapter.config import (
    SOURCE_KINDS,
    AwsOptions,
    ClientOptions,
    ConfigError,
    ConfigProblem,
    DeliveryOptions,
    FileSourceOptions,
    Identity,
    S3SourceOptions,
    SourceConfig,
    SourceKind,
    SqsSourceOptions,
    WebhookOptions,
    known_keys,
    load_config,
    parse_documents,
    parse_dotted,
    reference,
)
from cloudtrail_adapter.config.schema import document_keys
from cloudtrail_adapter.secret import Secret

# Also imported from here by test_monitoring.py (not this change's to edit) until it imports
# tests.support; the lint ban on test modules exempts it till then.
from tests.support.configs import (
    AWS_SECRET,
    INSTALLATION_KEY,
    OID,
    S3_SEED,
    SEED_ACCESS_KEY,
    SQS_SEED,
)

# Recognisable values that must never appear in a message or a repr.
FULL_INSTALLATION_KEY = "full-installation-key-SHOULD-NOT-LEAK-3b8e"
HOOK_SECRET = "hook-secret-SHOULD-NOT-LEAK-55d0"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

CLIENT = ClientOptions(
    identity=Identity(OID, Secret(INSTALLATION_KEY)),
    hostname="trail-host",
    platform="aws",
    sensor_seed_key="trail-seed",
)


def parse(text: str, env: dict[str, str] | None = None) -> list[SourceConfig]:
    return parse_documents(textwrap.dedent(text), env or {}, "test.yaml")


def problems(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value.errors


def dotted_problems(kind: SourceKind, pairs: list[str]) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        parse_dotted(kind, pairs, {})
    return caught.value.errors


def only(found: list[ConfigProblem], key: str) -> ConfigProblem:
    matching = [p for p in found if p.key == key]
    assert len(matching) == 1, [str(p) for p in found]
    return matching[0]


# ---- the seed documents ------------------------------------------------------------------


def test_s3_seed_document_parses_into_expected_values() -> None:
    [cfg] = parse(S3_SEED)
    assert cfg == SourceConfig(
        index=1,
        kind="s3",
        source=S3SourceOptions(bucket_name="acme-org-cloudtrail"),
        aws=AwsOptions(access_key=SEED_ACCESS_KEY, secret_key=Secret(AWS_SECRET)),
        client_options=CLIENT,
        webhook=None,
        delivery=DeliveryOptions(),
    )
    assert cfg.aws.secret_key is not None and cfg.aws.secret_key.reveal() == AWS_SECRET
    assert cfg.name == "s3[1]:acme-org-cloudtrail"


def test_sqs_seed_document_parses_into_expected_values() -> None:
    [cfg] = parse(SQS_SEED)
    assert cfg == SourceConfig(
        index=1,
        kind="sqs",
        source=SqsSourceOptions(
            queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/cloudtrail"
        ),
        aws=AwsOptions(SEED_ACCESS_KEY, Secret(AWS_SECRET), region="eu-west-1"),
        client_options=CLIENT,
        webhook=None,
    )
    assert cfg.name == "sqs[1]:cloudtrail"


def test_seed_documents_with_env_placeholders() -> None:
    text = """\
    s3:
      client_options:
        hostname: ${HOST:-fallback-host}
        identity:
          installation_key: ${LC_INSTALLATION_KEY}
          oid: ${LC_OID}
        platform: aws
        sensor_seed_key: seed-${SUFFIX:-x}
      bucket_name: ${BUCKET}
      secret_key: ${AWS_SECRET_ACCESS_KEY}
      access_key: ${AWS_ACCESS_KEY_ID}
      parallel_fetch: ${FETCH}
      single_load: ${ONCE}
      prefix: "literal $${NOT_A_VAR}/"
    """
    env = {
        "LC_INSTALLATION_KEY": INSTALLATION_KEY,
        "LC_OID": OID.upper(),
        "BUCKET": "from-env",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_ACCESS_KEY_ID": SEED_ACCESS_KEY,
        "FETCH": "16",
        "ONCE": "yes",
        "SUFFIX": "",
    }
    [cfg] = parse(text, env)
    assert cfg.source == S3SourceOptions(
        bucket_name="from-env", prefix="literal ${NOT_A_VAR}/", parallel_fetch=16, single_load=True
    )
    assert cfg.client_options is not None
    assert cfg.client_options.hostname == "fallback-host"
    assert cfg.client_options.sensor_seed_key == "seed-x"  # `:-` applies to empty values too
    assert cfg.client_options.identity.oid == OID  # canonical lower-case form
    assert cfg.aws == AwsOptions(SEED_ACCESS_KEY, Secret(AWS_SECRET))


def test_example_configs_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "LC_OID": OID,
        "LC_INSTALLATION_KEY": INSTALLATION_KEY,
        "CLOUDTRAIL_BUCKET": "acme-trail",
        "CLOUDTRAIL_QUEUE_URL": "https://sqs.us-east-2.amazonaws.com/123456789012/trail",
        "LC_WEBHOOK_URL": "https://hooks.example.com/" + OID + "/cloudtrail",
        "LC_WEBHOOK_SECRET": HOOK_SECRET,
    }
    [s3] = load_config(CONFIG_DIR / "s3.yaml", env)
    assert s3.source == S3SourceOptions(bucket_name="acme-trail")
    assert s3.aws == AwsOptions()  # no keys given: the AWS credential chain
    assert s3.client_options is not None
    assert s3.client_options.hostname == "cloudtrail-adapter"
    [sqs] = load_config(CONFIG_DIR / "sqs.yaml", env)
    assert sqs.aws.region == "us-east-2"  # from the queue URL
    [hook] = load_config(CONFIG_DIR / "webhook.yaml", env)
    assert hook.client_options is None
    assert hook.webhook == WebhookOptions(env["LC_WEBHOOK_URL"], Secret(HOOK_SECRET))
    [org] = load_config(CONFIG_DIR / "org-trail.yaml", env)
    assert isinstance(org.source, S3SourceOptions)
    assert org.source.prefix == "AWSLogs/o-exampleorgid/"
    [notified] = load_config(CONFIG_DIR / "sqs-notifications.yaml", env)
    assert isinstance(notified.source, SqsSourceOptions)
    assert notified.source.max_messages_in_work == 200
    tested = {"s3", "sqs", "webhook", "org-trail", "sqs-notifications", "systemd"}
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == tested, "an example without a test"


# ---- errors: named, located, all at once --------------------------------------------------


def test_misspelled_key_is_named_with_a_suggestion() -> None:
    found = problems(S3_SEED.replace("bucket_name:", "bucketname:"))
    typo = only(found, "s3.bucketname")
    assert "did you mean bucket_name?" in typo.message
    assert (typo.document, typo.line) == (1, 9)
    assert str(typo) == (
        "test.yaml: document 1 (line 9): s3.bucketname: unknown key; did you mean bucket_name?"
    )
    assert only(found, "s3.bucket_name").message == "required key is missing"


def test_misspelled_nested_key() -> None:
    found = problems(S3_SEED.replace("      oid:", "      org_id:"))
    assert "identity.org_id: unknown key" in str(only(found, "s3.client_options.identity.org_id"))
    assert only(found, "s3.client_options.identity.oid").line == 4  # the identity: line


def test_missing_bucket_name_names_key_and_document() -> None:
    broken = S3_SEED.replace("  bucket_name: acme-org-cloudtrail\n", "")
    with pytest.raises(ConfigError) as caught:
        parse(SQS_SEED + "---\n" + broken)
    [error] = caught.value.errors
    assert error.key == "s3.bucket_name"
    assert error.document == 2
    assert error.line == 14  # the `s3:` line of the second document
    assert "document 2 (line 14): s3.bucket_name: required key is missing" in str(caught.value)


def test_every_error_is_reported_at_once() -> None:
    text = f"""\
    s3:
      client_options:
        identity:
          installation_key: {INSTALLATION_KEY}
          oid: not-a-uuid
        dest_url: https://wrong-scheme.example.com
      bucket_name: trail
      parallel_fetch: 0
      single_load: maybe
      poll_interval: -5
      delivery:
        batch_linger: soon
    ---
    sqs:
      queue_url: arn:aws:sqs:us-east-1:123456789012:trail
      max_messages: 11
      wait_time_seconds: 21
      visibility_timeout: "abc"
      webhook:
        url: ftp://hooks.example.com/x
      max_messages_in_work: 0
    """
    with pytest.raises(ConfigError) as caught:
        parse(text)
    found = caught.value.errors
    expected = {
        (1, 5, "s3.client_options.identity.oid"),
        (1, 6, "s3.client_options.dest_url"),
        (1, 8, "s3.parallel_fetch"),
        (1, 9, "s3.single_load"),
        (1, 10, "s3.poll_interval"),
        (1, 12, "s3.delivery.batch_linger"),
        (2, 15, "sqs.queue_url"),
        (2, 16, "sqs.max_messages"),
        (2, 17, "sqs.wait_time_seconds"),
        (2, 18, "sqs.visibility_timeout"),
        (2, 20, "sqs.webhook.url"),
        (2, 19, "sqs.webhook.secret"),
        (2, 21, "sqs.max_messages_in_work"),
    }
    assert {(p.document, p.line, p.key) for p in found} == expected
    assert len(str(caught.value).splitlines()) == len(expected)
    assert "expected an integer from 1 to 256, got 0" in only(found, "s3.parallel_fetch").message
    assert "from 0 to 20, got 21" in only(found, "sqs.wait_time_seconds").message
    assert "ws:// or wss://" in only(found, "s3.client_options.dest_url").message
    assert "not its ARN" in only(found, "sqs.queue_url").message


def test_yaml_syntax_error_gives_line_without_the_source_text() -> None:
    found = problems(f"s3:\n  bucket_name: trail\n  secret_key: {AWS_SECRET}: oops\n")
    [error] = found
    assert (error.document, error.line) == (1, 3)
    assert "invalid YAML" in error.message
    assert AWS_SECRET not in str(error)


def test_duplicate_keys_are_errors() -> None:
    found = problems(S3_SEED + "  bucket_name: second\n")
    assert only(found, "s3.bucket_name").message == "duplicate key"


def test_document_shape_errors() -> None:
    assert "one document holds one source" in str(problems("s3: {}\nsqs: {}\n")[0])
    assert "did you mean s3?" in only(problems("s3bucket: {}\n"), "s3bucket").message
    assert "expected a mapping" in only(problems("sqs: [1, 2]\n"), "sqs").message
    assert "no source documents" in str(problems("# nothing here\n---\n")[0])


# ---- ${VAR} --------------------------------------------------------------------------------


def test_missing_variable_names_key_and_variable() -> None:
    text = S3_SEED.replace(f"installation_key: {INSTALLATION_KEY}", "installation_key: ${LC_KEY}")
    found = problems(text)
    error = only(found, "s3.client_options.identity.installation_key")
    assert error.message == "environment variable LC_KEY is not set (and no default given)"
    assert error.line == 5


def test_variables_expand_in_any_string_and_defaults_apply() -> None:
    text = S3_SEED.replace("bucket_name: acme-org-cloudtrail", "bucket_name: ${ORG}-${KIND:-trail}")
    [cfg] = parse(text, {"ORG": "acme"})
    assert isinstance(cfg.source, S3SourceOptions)
    assert cfg.source.bucket_name == "acme-trail"


def test_bad_references_in_secrets_do_not_echo_them() -> None:
    text = S3_SEED.replace(AWS_SECRET, f'"{AWS_SECRET}${{not a name}}"').replace(
        f"installation_key: {INSTALLATION_KEY}", f'installation_key: "{HOOK_SECRET}${{oops"'
    )
    found = problems(text)
    assert "malformed variable reference (expected" in only(found, "s3.secret_key").message
    unterminated = only(found, "s3.client_options.identity.installation_key")
    assert "unterminated ${" in unterminated.message
    shown = "\n".join(str(p) for p in found)
    assert AWS_SECRET not in shown and HOOK_SECRET not in shown and "not a name" not in shown
    # Outside secrets the reference is shown, to help find it.
    found = problems(S3_SEED.replace("trail-host", "${not a name}"))
    assert "${not a name}" in only(found, "s3.client_options.hostname").message


def test_credentials_are_read_from_systemds_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "lc-key").write_text(INSTALLATION_KEY + "\n")
    (tmp_path / "aws-secret").write_text(AWS_SECRET)
    text = S3_SEED.replace(
        f"installation_key: {INSTALLATION_KEY}", "installation_key: ${credential:lc-key}"
    ).replace(f"secret_key: {AWS_SECRET}", "secret_key: ${credential:aws-secret}")
    [cfg] = parse(text, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.client_options is not None
    assert cfg.client_options.identity.installation_key == Secret(INSTALLATION_KEY)
    assert cfg.aws.secret_key == Secret(AWS_SECRET)


def test_credential_errors_say_what_is_missing(tmp_path: Path) -> None:
    text = S3_SEED.replace(f"secret_key: {AWS_SECRET}", "secret_key: ${credential:aws-secret}")
    unset = only(problems(text), "s3.secret_key").message
    assert (
        unset == "${credential:aws-secret} needs $CREDENTIALS_DIRECTORY (systemd's LoadCredential=)"
    )
    missing = only(problems(text, {"CREDENTIALS_DIRECTORY": str(tmp_path)}), "s3.secret_key")
    assert missing.message == (
        "credential aws-secret cannot be read from $CREDENTIALS_DIRECTORY: "
        "No such file or directory"
    )
    bad = only(problems(text.replace("aws-secret", "../etc/passwd")), "s3.secret_key")
    assert bad.message.startswith("malformed credential name '../etc/passwd'")


def test_the_systemd_example_reads_its_secrets_as_credentials(tmp_path: Path) -> None:
    (tmp_path / "lc-installation-key").write_text(INSTALLATION_KEY)
    (tmp_path / "aws-secret-key").write_text(AWS_SECRET)
    [cfg] = load_config(CONFIG_DIR / "systemd.yaml", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.aws.secret_key == Secret(AWS_SECRET)


# ---- multiple documents --------------------------------------------------------------------


def test_multi_document_file(tmp_path: Path) -> None:
    replay = f"file:\n  path: {tmp_path}\n  webhook: {{url: https://h.example/a, secret: x}}\n"
    path = tmp_path / "sources.yaml"
    path.write_text("---\n" + S3_SEED + "---\n# a comment\n---\n" + SQS_SEED + "---\n" + replay)
    warnings: list[ConfigProblem] = []
    configs = load_config(path, {}, warnings=warnings)
    assert [(c.index, c.kind) for c in configs] == [(1, "s3"), (3, "sqs"), (4, "file")]
    assert configs[2].source == FileSourceOptions(path=tmp_path)
    assert configs[2].aws == AwsOptions()
    assert warnings == []


def test_expected_kind_rejects_other_documents(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(S3_SEED + "---\n" + SQS_SEED)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, expect_kind="s3")
    [error] = caught.value.errors
    assert (error.document, error.key) == (2, "sqs")
    assert "a sqs source, but the command is `s3`" in error.message
    assert error.origin == str(path)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", {})
    assert "cannot read" in str(caught.value)


# ---- the dotted command-line form ----------------------------------------------------------


def test_dotted_form_coerces_per_field() -> None:
    [cfg] = parse_dotted(
        "sqs",
        [
            f"client_options.identity.oid={OID}",
            f"client_options.identity.installation_key={INSTALLATION_KEY}",
            "client_options.hostname=cli-host",
            "client_options.mapping.event_type_path=eventName",
            "queue_url=https://sqs.ap-south-1.amazonaws.com/123456789012/q",
            "parallel_fetch=32",
            "single_load=true",
            "max_messages=5",
            "delivery.batch_linger=0.25",
            "delivery.stream_threshold=1048576",
            "delivery.max_buffered_bytes=33554432",
            "access_key=${KEY_ID}",
            f"secret_key={AWS_SECRET}",
        ],
        {"KEY_ID": SEED_ACCESS_KEY},
    )
    assert cfg.source == SqsSourceOptions(
        queue_url="https://sqs.ap-south-1.amazonaws.com/123456789012/q",
        parallel_fetch=32,
        single_load=True,
        max_messages=5,
    )
    assert cfg.delivery == DeliveryOptions(
        batch_linger=0.25, stream_threshold=1 << 20, max_buffered_bytes=32 << 20
    )
    assert cfg.aws == AwsOptions(SEED_ACCESS_KEY, Secret(AWS_SECRET), region="ap-south-1")
    assert cfg.client_options is not None
    assert cfg.client_options.mapping == {"event_type_path": "eventName"}
    assert cfg.client_options.hostname == "cli-host"
    assert cfg.index == 1


@pytest.mark.parametrize(("text", "value"), [("yes", True), ("0", False), ("FALSE", False)])
def test_dotted_booleans(text: str, value: bool) -> None:
    [cfg] = parse_dotted(
        "s3",
        [
            f"client_options.identity.oid={OID}",
            f"client_options.identity.installation_key={INSTALLATION_KEY}",
            "bucket_name=b",
            f"delete_after_ack={text}",
        ],
        {},
    )
    assert isinstance(cfg.source, S3SourceOptions)
    assert cfg.source.delete_after_ack is value


def test_dotted_form_errors() -> None:
    found = dotted_problems(
        "s3",
        [
            "client_options.identity.oid=" + OID,
            "bucketname=b",
            "parallel_fetch=many",
            "poll_interval=1e9",
            AWS_SECRET,  # a secret without its key= (not echoed)
        ],
    )
    assert only(found, "s3.bucketname").message == "unknown key; did you mean bucket_name?"
    assert only(found, "s3.bucket_name").message == "required key is missing"
    assert "got 'many'" in only(found, "s3.parallel_fetch").message
    assert "at most 86400" in only(found, "s3.poll_interval").message
    assert "argument 5 is not key=value" in str(found)
    assert only(found, "s3.client_options.identity.installation_key")
    assert all(p.origin == "command line" and p.document is None for p in found)
    assert AWS_SECRET not in "\n".join(str(p) for p in found)


# ---- destinations, credentials ---------------------------------------------------------------


def test_client_options_and_webhook_together_is_an_error() -> None:
    text = (
        S3_SEED + f"  webhook:\n    url: https://hooks.example.com/a/b\n    secret: {HOOK_SECRET}\n"
    )
    error = only(problems(text), "s3.webhook")
    assert "exactly one destination" in error.message
    assert error.line == 12


def test_a_destination_is_required() -> None:
    text = "s3:\n  bucket_name: trail\n"
    assert "set client_options" in only(problems(text), "s3.client_options").message


def test_access_key_without_secret_key() -> None:
    error = only(problems(S3_SEED.replace(f"  secret_key: {AWS_SECRET}\n", "")), "s3.secret_key")
    assert "access_key is set but secret_key is not" in error.message


def test_endpoint_url_falls_back_to_the_environment() -> None:
    [cfg] = parse(S3_SEED, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert cfg.aws.endpoint_url == "http://127.0.0.1:9000"
    explicit = S3_SEED + "  endpoint_url: https://s3.example.com\n"
    [cfg] = parse(explicit, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert cfg.aws.endpoint_url == "https://s3.example.com"
    assert (
        "AWS_ENDPOINT_URL"
        in only(problems(S3_SEED, {"AWS_ENDPOINT_URL": "ftp://x"}), "s3.endpoint_url").message
    )


def test_file_source_needs_a_directory(tmp_path: Path) -> None:
    text = f"file:\n  path: {tmp_path / 'absent'}\n  webhook:\n    url: https://h.example/a\n"
    found = problems(text + f"    secret: {HOOK_SECRET}\n  region: us-east-1\n")
    assert "expected a directory" in only(found, "file.path").message
    assert "unknown key" in only(found, "file.region").message


# ---- secrets -----------------------------------------------------------------------------------


def test_secrets_never_appear_in_repr_or_str() -> None:
    usp_text = S3_SEED.replace(INSTALLATION_KEY, FULL_INSTALLATION_KEY)
    hook_text = f"""\
    sqs:
      queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/q
      access_key: {SEED_ACCESS_KEY}
      secret_key: {AWS_SECRET}
      webhook:
        url: https://hooks.example.com/{OID}/cloudtrail
        secret: {HOOK_SECRET}
    """
    configs = parse(usp_text) + parse(hook_text)
    for cfg in configs:
        for shown in (repr(cfg), str(cfg), cfg.name):
            for secret in (AWS_SECRET, FULL_INSTALLATION_KEY, HOOK_SECRET):
                assert secret not in shown
    assert configs[1].webhook is not None
    assert configs[1].webhook.secret.reveal() == HOOK_SECRET


def test_secrets_never_appear_in_errors() -> None:
    text = f"""\
    s3:
      client_options:
        identity:
          oid: {FULL_INSTALLATION_KEY}
          installation_key: {OID}
      bucket_name: trail
      secret_key: {AWS_SECRET}
    ---
    sqs:
      queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/q
      secret_key: [{AWS_SECRET}]
      webhook:
        url: https://hooks.example.com/{OID}/cloudtrail/{HOOK_SECRET}
        secret: {HOOK_SECRET}
    """
    with pytest.raises(ConfigError) as caught:
        parse(text)
    found = caught.value.errors
    assert (
        "may be a swapped installation key" in only(found, "s3.client_options.identity.oid").message
    )
    assert "contains the webhook secret" in only(found, "sqs.webhook.url").message
    assert "expected a string, got a list" in only(found, "sqs.secret_key").message
    assert only(found, "s3.access_key")
    shown = str(caught.value) + repr(caught.value)
    for secret in (AWS_SECRET, FULL_INSTALLATION_KEY, HOOK_SECRET):
        assert secret not in shown


def test_installation_key_that_is_not_a_uuid_is_a_warning_without_the_key() -> None:
    warnings: list[ConfigProblem] = []
    text = textwrap.dedent(S3_SEED.replace(INSTALLATION_KEY, FULL_INSTALLATION_KEY))
    [cfg] = parse_documents(text, {}, "test.yaml", warnings=warnings)
    [warning] = warnings
    assert warning.key == "s3.client_options.identity.installation_key"
    assert (warning.document, warning.line) == (1, 5)
    assert "Adapter Key" in warning.message and "UUID" in warning.message
    assert FULL_INSTALLATION_KEY not in str(warning)
    assert cfg.client_options is not None
    assert cfg.client_options.identity.installation_key.reveal() == FULL_INSTALLATION_KEY


# ---- documentation -------------------------------------------------------------------------


def test_the_readme_key_table_is_the_one_the_declarations_make() -> None:
    readme = (CONFIG_DIR.parent / "README.md").read_text()
    assert reference.table() in readme, "run `make docs` after changing a key's declaration"
    assert reference.rewrite(readme) == readme


def test_every_declared_key_is_in_the_table_once() -> None:
    table = reference.table()
    for kind in SOURCE_KINDS:
        for key in known_keys(kind):
            assert table.count(f"\n| `{key}` |") == 1, key


ROLE = "arn:aws:iam::123456789012:role/reader"


def _attribute(cfg: SourceConfig, path: str) -> object:
    section, _, name = path.rpartition(".")
    if not section:
        return getattr(cfg.source if hasattr(cfg.source, name) else cfg.aws, name)
    holder: object = cfg.source if hasattr(cfg.source, section.split(".")[0]) else cfg
    for part in section.split("."):
        holder = getattr(holder, "record_filter" if part == "filter" else part)
    return getattr(holder, name)


@pytest.mark.parametrize("kind", ["s3", "sqs", "sqs-files", "file"])
def test_every_declared_default_is_a_value_the_parser_accepts(
    kind: SourceKind, tmp_path: Path
) -> None:
    """Given back as text, each default parses to itself: no default lies outside its range."""
    base = {
        "s3": ["bucket_name=trail", f"role_arn={ROLE}", "integrity.verify=true"],
        "sqs": ["queue_url=https://sqs.us-east-1.amazonaws.com/123456789012/q", f"role_arn={ROLE}"],
        "sqs-files": [
            "queue_url=https://sqs.us-east-1.amazonaws.com/123456789012/q",
            f"role_arn={ROLE}",
        ],
        "file": [f"path={tmp_path}"],
    }[kind] + [
        f"client_options.identity.oid={OID}",
        f"client_options.identity.installation_key={INSTALLATION_KEY}",
        "client_options.proxy.url=http://127.0.0.1:3128",
    ]
    checked = 0
    for path, key, _ in document_keys(kind):
        if path in ("role_arn", "client_options.proxy.url", "integrity.verify"):
            continue
        default = key.default
        if default in (None, (), dataclasses.MISSING) or path.startswith("webhook."):
            continue
        text = str(default).lower() if isinstance(default, bool) else str(default)
        [cfg] = parse_dotted(kind, [*base, f"{path}={text}"], {})
        assert _attribute(cfg, path) == default, path
        checked += 1
    assert checked >= {"s3": 29, "sqs": 23, "sqs-files": 26, "file": 21}[kind]

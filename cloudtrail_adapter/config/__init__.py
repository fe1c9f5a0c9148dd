"""Adapter YAML documents -> frozen, typed configuration.

`values` holds the typed values and each key's one declaration, `keys` the kinds of key,
`reader` the located YAML tree and its typed accessors, `schema` the shape of a document,
`reference` the README's key table made from the declarations.
"""

from cloudtrail_adapter.config.reader import ConfigError, ConfigProblem
from cloudtrail_adapter.config.schema import (
    COMMAND_LINE,
    SOURCE_KINDS,
    known_keys,
    load_config,
    parse_documents,
    parse_dotted,
    queue_region,
)
from cloudtrail_adapter.config.values import (
    DEFAULT_API_URL,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_UNREADY_AFTER,
    AwsOptions,
    ClientOptions,
    DedupOptions,
    DeliveryOptions,
    FileSourceOptions,
    Identity,
    IntegrityOptions,
    RecordFilter,
    S3SourceOptions,
    SourceConfig,
    SourceKind,
    SourceOptions,
    SqsFilesSourceOptions,
    SqsSourceOptions,
    WebhookOptions,
)

__all__ = [
    "COMMAND_LINE",
    "DEFAULT_API_URL",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_UNREADY_AFTER",
    "SOURCE_KINDS",
    "AwsOptions",
    "ClientOptions",
    "ConfigError",
    "ConfigProblem",
    "DedupOptions",
    "DeliveryOptions",
    "FileSourceOptions",
    "Identity",
    "IntegrityOptions",
    "RecordFilter",
    "S3SourceOptions",
    "SourceConfig",
    "SourceKind",
    "SourceOptions",
    "SqsFilesSourceOptions",
    "SqsSourceOptions",
    "WebhookOptions",
    "known_keys",
    "load_config",
    "parse_documents",
    "parse_dotted",
    "queue_region",
]

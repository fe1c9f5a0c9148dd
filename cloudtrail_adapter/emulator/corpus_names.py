"""The corpus's name tables: who acts, on what, from where (data only)."""

from __future__ import annotations

from typing import Final

REGIONS: Final = (
    "us-east-1",
    "eu-west-1",
    "us-west-2",
    "eu-central-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ca-central-1",
    "sa-east-1",
)
USERS: Final = ("alice", "bob", "carol", "dmitri", "deploy-bot", "ci-runner", "security-audit")
ROLES: Final = (
    "OrganizationAccountAccessRole",
    "AWSReservedSSO_AdministratorAccess_3f2a9c1b7d4e5a60",
    "AWSReservedSSO_ReadOnly_8e1c0b6a2d9f4e37",
    "github-actions-deploy",
    "lambda-exec-orders",
    "eks-node-group-NodeInstanceRole",
    "SecurityAuditRole",
)
SESSIONS: Final = (
    "alice@example.com",
    "bob@example.com",
    "botocore-session-1714",
    "i-0b7e4c1d9a2f3e856",
    "GitHubActions",
)
SERVICES: Final = (
    "lambda.amazonaws.com",
    "ec2.amazonaws.com",
    "s3.amazonaws.com",
    "cloudformation.amazonaws.com",
    "config.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
)
BUCKETS: Final = (
    "acme-prod-data",
    "acme-artifacts",
    "acme-backups",
    "acme-web-assets",
    "acme-logs",
)
OBJECT_KEYS: Final = (
    "exports/2024/05/orders-000{n}.parquet",
    "builds/api/{n}/bundle.zip",
    "db/postgres/base-{n}.tar.zst",
    "static/img/banner-{n}.webp",
    "rapports/2024/résumé-Q{n}.pdf",
    "データ/ログ-{n}.csv",
)
FUNCTIONS: Final = ("orders-api", "thumbnailer", "audit-forwarder")
USER_AGENTS: Final = (
    "aws-cli/2.15.30 Python/3.11.8 Linux/5.10.213-201.855.amzn2.x86_64 exe/x86_64.amzn.2 "
    "prompt/off command/{service}.{op}",
    "Boto3/1.34.84 md/Botocore#1.34.84 ua/2.0 os/linux#6.1.0-18-cloud-amd64 md/arch#x86_64 "
    "lang/python#3.11.9 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.84",
    "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.2 md/GOOS#linux md/GOARCH#amd64 "
    "api/{service}#1.31.4",
    "APN/1.0 HashiCorp/1.0 Terraform/1.8.2 (+https://www.terraform.io) "
    "terraform-provider-aws/5.47.0 (+https://registry.terraform.io/providers/hashicorp/aws) "
    "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.2 api/{service}#1.31.4",
    "aws-sdk-java/2.25.40 Linux/5.15.0-1057-aws OpenJDK_64-Bit_Server_VM/17.0.11+9-LTS "
    "Java/17.0.11 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.696 Linux/5.10.215-181.850.amzn2int.x86_64 "
    "OpenJDK_64-Bit_Server_VM/25.402-b08 java/1.8.0_402 vendor/Oracle_Corporation]",
)
BROWSER: Final = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
TLS: Final = (
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
    ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
)
IDENTITY_WEIGHTS: Final[tuple[tuple[str, int], ...]] = (
    ("AssumedRole", 62),
    ("IAMUser", 20),
    ("AWSService", 16),
    ("Root", 2),
)
HUMAN_WEIGHTS: Final = tuple(w for w in IDENTITY_WEIGHTS if w[0] != "AWSService")

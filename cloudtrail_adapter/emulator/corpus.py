"""A seeded, realistic CloudTrail corpus for the demo, the tests and the benchmarks.

Everything is drawn from the `random.Random` passed in (or seeded from `seed`), so a seed
always yields the same keys, bodies and event IDs. Records follow the shapes of real
CloudTrail records (nested identities, `requestParameters` per API, `responseElements`
often null, occasional errors, booleans that are sometimes strings); keys follow the exact
S3 layout CloudTrail writes, organisation prefix and digest files included.

Sizes: most records are 0.8-4 KB; about one in a thousand carries a ~100 KB inline policy,
as real `PutRolePolicy`/`PutBucketPolicy` calls do.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import random
import string
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import orjson

__all__ = [
    "LARGE_RECORD_RATE",
    "REGIONS",
    "START",
    "CorpusFile",
    "cloudtrail_record",
    "digest_file",
    "digest_key",
    "log_file",
    "object_key",
    "org_trail",
    "write_directory",
]

#: The first day of every `org_trail` corpus (fixed, so that keys are stable).
START: Final = datetime(2024, 5, 6, tzinfo=UTC)
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
#: How often a record carries a ~100 KB policy document.
LARGE_RECORD_RATE: Final = 0.001

Json = dict[str, Any]

_ALNUM: Final = string.ascii_letters + string.digits
_UPPER_ALNUM: Final = string.ascii_uppercase + string.digits
_GZIP_LEVEL: Final = 6
_DELIVERY_STEP_MINUTES: Final = 5
_USERS: Final = ("alice", "bob", "carol", "dmitri", "deploy-bot", "ci-runner", "security-audit")
_ROLES: Final = (
    "OrganizationAccountAccessRole",
    "AWSReservedSSO_AdministratorAccess_3f2a9c1b7d4e5a60",
    "AWSReservedSSO_ReadOnly_8e1c0b6a2d9f4e37",
    "github-actions-deploy",
    "lambda-exec-orders",
    "eks-node-group-NodeInstanceRole",
    "SecurityAuditRole",
)
_SESSIONS: Final = (
    "alice@example.com",
    "bob@example.com",
    "botocore-session-1714",
    "i-0b7e4c1d9a2f3e856",
    "GitHubActions",
)
_SERVICES: Final = (
    "lambda.amazonaws.com",
    "ec2.amazonaws.com",
    "s3.amazonaws.com",
    "cloudformation.amazonaws.com",
    "config.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
)
_BUCKETS: Final = (
    "acme-prod-data",
    "acme-artifacts",
    "acme-backups",
    "acme-web-assets",
    "acme-logs",
)
_OBJECT_KEYS: Final = (
    "exports/2024/05/orders-000{n}.parquet",
    "builds/api/{n}/bundle.zip",
    "db/postgres/base-{n}.tar.zst",
    "static/img/banner-{n}.webp",
    "rapports/2024/résumé-Q{n}.pdf",
    "データ/ログ-{n}.csv",
)
_FUNCTIONS: Final = ("orders-api", "thumbnailer", "audit-forwarder")
_USER_AGENTS: Final = (
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
_BROWSER: Final = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
_TLS: Final = (
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
    ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
)
_KEY_LAYOUT_TIME: Final = "%Y%m%dT%H%MZ"
_DIGEST_LAYOUT_TIME: Final = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class CorpusFile:
    """One S3 object of the corpus; `event_ids` in file order (empty for digests)."""

    key: str
    body: bytes
    event_ids: tuple[str, ...]
    kind: Literal["log", "digest"]


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class _Ctx:
    rng: random.Random
    account: str
    region: str
    when: datetime
    identity: Json
    actor_arn: str


@dataclass(frozen=True, slots=True)
class _Api:
    weight: int
    identities: frozenset[str]
    build: Callable[[_Ctx], Json]
    global_service: bool = False  # logged in us-east-1 files only (IAM, sign-in)


def cloudtrail_record(
    rng: random.Random, *, account: str, region: str, when: datetime
) -> dict[str, Any]:
    """One realistic CloudTrail record made in `account`/`region` at `when` (UTC)."""
    large = rng.random() < LARGE_RECORD_RATE
    identity_type = _weighted(rng, _HUMAN_WEIGHTS if large else _IDENTITY_WEIGHTS)
    identity, actor_arn = _identity(rng, identity_type, account, when)
    ctx = _Ctx(rng, account, region, when, identity, actor_arn)
    api = _large_policy(ctx) if large else _pick_api(rng, identity_type, region).build(ctx)
    return _assemble(ctx, identity_type, api)


def _assemble(ctx: _Ctx, identity_type: str, api: Json) -> Json:
    rng = ctx.rng
    service = api["eventSource"].split(".", 1)[0]
    record: Json = {
        "eventVersion": rng.choice(("1.08", "1.09", "1.09")),
        "userIdentity": ctx.identity,
        "eventTime": _iso(ctx.when),
        "eventSource": api["eventSource"],
        "eventName": api["eventName"],
        "awsRegion": "us-east-1" if api.get("global") else ctx.region,
    }
    if identity_type == "AWSService":
        invoker = ctx.identity["invokedBy"]
        record["sourceIPAddress"] = invoker
        record["userAgent"] = invoker
    else:
        record["sourceIPAddress"] = _public_ip(rng)
        agent = api.get("userAgent") or rng.choice(_USER_AGENTS)
        record["userAgent"] = agent.format(service=service, op=_kebab(api["eventName"]))
    response = api.get("responseElements")
    if rng.random() < 0.05 and api.get("canFail", True):
        code, message = _error(rng, service, api["eventName"], ctx.actor_arn)
        record["errorCode"] = code
        record["errorMessage"] = message
        response = None
    record["requestParameters"] = api.get("requestParameters")
    record["responseElements"] = response
    if "additionalEventData" in api:
        record["additionalEventData"] = api["additionalEventData"]
    record["requestID"] = api.get("requestID") or _uuid(rng)
    record["eventID"] = _uuid(rng)
    record["readOnly"] = api["readOnly"]
    if "resources" in api:
        record["resources"] = api["resources"]
    record["eventType"] = api.get("eventType", "AwsApiCall")
    category = api.get("eventCategory", "Management")
    record["managementEvent"] = category == "Management"
    record["recipientAccountId"] = ctx.account
    if identity_type == "AWSService" and rng.random() < 0.5:
        record["sharedEventID"] = _uuid(rng)
    if category == "Data" and rng.random() < 0.2:
        record["vpcEndpointId"] = f"vpce-{_hex(rng, 17)}"
    record["eventCategory"] = category
    if identity_type != "AWSService":
        version, cipher = rng.choice(_TLS)
        host = api.get("host") or f"{service}.{record['awsRegion']}.amazonaws.com"
        record["tlsDetails"] = {
            "tlsVersion": version,
            "cipherSuite": cipher,
            "clientProvidedHostHeader": host,
        }
    if identity_type in ("IAMUser", "Root") and rng.random() < 0.3:
        record["sessionCredentialFromConsole"] = "true"
    return record


_IDENTITY_WEIGHTS: Final[tuple[tuple[str, int], ...]] = (
    ("AssumedRole", 62),
    ("IAMUser", 20),
    ("AWSService", 16),
    ("Root", 2),
)
_HUMAN_WEIGHTS: Final = tuple(w for w in _IDENTITY_WEIGHTS if w[0] != "AWSService")


def _identity(rng: random.Random, kind: str, account: str, when: datetime) -> tuple[Json, str]:
    created = _iso(when - timedelta(minutes=rng.randint(1, 600)))
    mfa = rng.choice(("true", "false"))
    if kind == "AWSService":
        return {"type": "AWSService", "invokedBy": rng.choice(_SERVICES)}, ""
    if kind == "Root":
        arn = f"arn:aws:iam::{account}:root"
        return {
            "type": "Root",
            "principalId": account,
            "arn": arn,
            "accountId": account,
            "accessKeyId": _key_id(rng, "ASIA"),
            "sessionContext": {"attributes": {"creationDate": created, "mfaAuthenticated": mfa}},
        }, arn
    if kind == "IAMUser":
        user = rng.choice(_USERS)
        arn = f"arn:aws:iam::{account}:user/{user}"
        identity: Json = {
            "type": "IAMUser",
            "principalId": _stable_id("AIDA", account, user),
            "arn": arn,
            "accountId": account,
            "accessKeyId": _key_id(rng, rng.choice(("AKIA", "ASIA"))),
            "userName": user,
        }
        if identity["accessKeyId"].startswith("ASIA"):
            identity["sessionContext"] = {
                "attributes": {"creationDate": created, "mfaAuthenticated": mfa}
            }
        return identity, arn
    role = rng.choice(_ROLES)
    session = rng.choice(_SESSIONS)
    role_id = _stable_id("AROA", account, role)
    arn = f"arn:aws:sts::{account}:assumed-role/{role}/{session}"
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": arn,
        "accountId": account,
        "accessKeyId": _key_id(rng, "ASIA"),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": created, "mfaAuthenticated": mfa},
            **({"sourceIdentity": session} if "@" in session else {}),
        },
    }, arn


def _pick_api(rng: random.Random, identity_type: str, region: str) -> _Api:
    apis, weights = _candidates(identity_type, region == "us-east-1")
    return rng.choices(apis, cum_weights=weights)[0]


@cache
def _candidates(identity_type: str, global_region: bool) -> tuple[list[_Api], list[int]]:
    apis = [
        api
        for api in _APIS
        if identity_type in api.identities and (global_region or not api.global_service)
    ]
    return apis, list(itertools.accumulate(api.weight for api in apis))


def _error(rng: random.Random, service: str, name: str, actor: str) -> tuple[str, str]:
    if rng.random() < 0.15:
        return "ThrottlingException", "Rate exceeded"
    if service == "ec2":
        blob = base64.b64encode(rng.randbytes(rng.randint(300, 600))).decode()
        return (
            "Client.UnauthorizedOperation",
            "You are not authorized to perform this operation. User: "
            f"{actor} is not authorized to perform: ec2:{name} because no identity-based "
            f"policy allows the ec2:{name} action. Encoded authorization failure message: {blob}",
        )
    if service in ("kms", "lambda", "secretsmanager", "ssm"):
        return (
            "AccessDeniedException",
            f"User: {actor} is not authorized to perform: {service}:{name} because no "
            "identity-based policy allows the action",
        )
    if service == "iam" and name.startswith("Get"):
        return "NoSuchEntity", "The user with name nobody cannot be found."
    return "AccessDenied", "Access Denied"


# --- the APIs, one small builder each --------------------------------------------------


def _s3_object(ctx: _Ctx, name: str) -> Json:
    rng = ctx.rng
    bucket = rng.choice(_BUCKETS)
    key = rng.choice(_OBJECT_KEYS).format(n=rng.randint(1, 9999))
    out = rng.randint(0, 50_000_000) if name == "GetObject" else 0
    api: Json = {
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "readOnly": name == "GetObject",
        "eventCategory": "Data",
        "host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
        "requestID": _upper(rng, 16),
        "requestParameters": {
            "bucketName": bucket,
            "Host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
            "key": key,
            **({"x-amz-acl": "bucket-owner-full-control"} if name == "PutObject" else {}),
        },
        "responseElements": None,
        "additionalEventData": {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": 0 if name == "GetObject" else rng.randint(1, 5_000_000),
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": base64.b64encode(rng.randbytes(57)).decode(),
            "bytesTransferredOut": out,
        },
        "resources": [
            {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
            {"accountId": ctx.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"},
        ],
    }
    if name == "PutObject":
        api["responseElements"] = {
            "x-amz-server-side-encryption": "aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id": _kms_arn(ctx),
            "x-amz-version-id": _alnum(rng, 32),
        }
    return api


def _s3_bucket(ctx: _Ctx, name: str) -> Json:
    bucket = ctx.rng.choice(_BUCKETS)
    host = f"{bucket}.s3.{ctx.region}.amazonaws.com"
    params: Json = {"bucketName": bucket, "Host": host}
    params.update({"acl": ""} if name == "GetBucketAcl" else {"encryption": ""})
    return {
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "readOnly": True,
        "host": host,
        "requestID": _upper(ctx.rng, 16),
        "requestParameters": params,
        "responseElements": None,
        "additionalEventData": {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": 0,
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": base64.b64encode(ctx.rng.randbytes(57)).decode(),
            "bytesTransferredOut": ctx.rng.randint(200, 900),
        },
        "resources": [
            {"accountId": ctx.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}
        ],
    }


def _ec2_describe(ctx: _Ctx) -> Json:
    rng = ctx.rng
    if rng.random() < 0.5:
        params: Json = {
            "instancesSet": {"items": [{"instanceId": _ec2_id(rng, "i")}]},
            "filterSet": {},
            "includeAllInstances": False,
        }
    else:
        params = {
            "maxResults": 1000,
            "instancesSet": {},
            "filterSet": {
                "items": [
                    {"name": "tag:Name", "valueSet": {"items": [{"value": "web-*"}]}},
                    {"name": "instance-state-name", "valueSet": {"items": [{"value": "running"}]}},
                ]
            },
        }
    return {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "readOnly": True,
        "requestParameters": params,
        "responseElements": None,
    }


def _ec2_run(ctx: _Ctx) -> Json:
    rng = ctx.rng
    instance, image, subnet, vpc = (_ec2_id(rng, p) for p in ("i", "ami", "subnet", "vpc"))
    group, eni = _ec2_id(rng, "sg"), _ec2_id(rng, "eni")
    zone = f"{ctx.region}{rng.choice('abc')}"
    ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    dns = f"ip-{ip.replace('.', '-')}.{ctx.region}.compute.internal"
    itype = rng.choice(("t3.micro", "m6i.large", "c7g.xlarge", "r6a.2xlarge"))
    tags = {
        "items": [
            {"key": "Name", "value": f"web-{rng.randint(1, 99)}"},
            {"key": "team", "value": "payments"},
        ]
    }
    return {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "RunInstances",
        "readOnly": False,
        "requestParameters": {
            "instancesSet": {"items": [{"imageId": image, "minCount": 1, "maxCount": 1}]},
            "instanceType": itype,
            "blockDeviceMapping": {},
            "monitoring": {"enabled": False},
            "disableApiTermination": False,
            "disableApiStop": False,
            "clientToken": _uuid(rng),
            "networkInterfaceSet": {
                "items": [
                    {
                        "deviceIndex": 0,
                        "subnetId": subnet,
                        "groupSet": {"items": [{"groupId": group}]},
                    }
                ]
            },
            "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": tags["items"]}]},
        },
        "responseElements": {
            "requestId": _uuid(rng),
            "reservationId": f"r-{_hex(rng, 17)}",
            "ownerId": ctx.account,
            "groupSet": {},
            "instancesSet": {
                "items": [
                    {
                        "instanceId": instance,
                        "imageId": image,
                        "currentInstanceBootMode": "uefi",
                        "instanceState": {"code": 0, "name": "pending"},
                        "privateDnsName": dns,
                        "amiLaunchIndex": 0,
                        "productCodes": {},
                        "instanceType": itype,
                        "launchTime": int(ctx.when.timestamp() * 1000),
                        "placement": {"availabilityZone": zone, "tenancy": "default"},
                        "monitoring": {"state": "disabled"},
                        "subnetId": subnet,
                        "vpcId": vpc,
                        "privateIpAddress": ip,
                        "stateReason": {"code": "pending", "message": "pending"},
                        "architecture": "x86_64",
                        "rootDeviceType": "ebs",
                        "rootDeviceName": "/dev/xvda",
                        "blockDeviceMapping": {},
                        "virtualizationType": "hvm",
                        "hypervisor": "xen",
                        "tagSet": tags,
                        "groupSet": {"items": [{"groupId": group, "groupName": "web"}]},
                        "sourceDestCheck": True,
                        "networkInterfaceSet": {
                            "items": [
                                {
                                    "networkInterfaceId": eni,
                                    "subnetId": subnet,
                                    "vpcId": vpc,
                                    "ownerId": ctx.account,
                                    "status": "in-use",
                                    "macAddress": ":".join(_hex(rng, 2) for _ in range(6)),
                                    "privateIpAddress": ip,
                                    "sourceDestCheck": True,
                                    "interfaceType": "interface",
                                    "groupSet": {"items": [{"groupId": group, "groupName": "web"}]},
                                    "attachment": {
                                        "attachmentId": _ec2_id(rng, "eni-attach"),
                                        "deviceIndex": 0,
                                        "networkCardIndex": 0,
                                        "status": "attaching",
                                        "attachTime": int(ctx.when.timestamp() * 1000),
                                        "deleteOnTermination": True,
                                    },
                                    "privateIpAddressesSet": {
                                        "item": [{"privateIpAddress": ip, "primary": True}]
                                    },
                                    "ipv6AddressesSet": {},
                                    "tagSet": {},
                                }
                            ]
                        },
                        "ebsOptimized": False,
                        "enaSupport": True,
                        "cpuOptions": {"coreCount": 1, "threadsPerCore": 2},
                        "capacityReservationSpecification": {
                            "capacityReservationPreference": "open"
                        },
                        "enclaveOptions": {"enabled": False},
                        "metadataOptions": {
                            "state": "pending",
                            "httpTokens": "required",
                            "httpPutResponseHopLimit": 2,
                            "httpEndpoint": "enabled",
                        },
                        "privateDnsNameOptions": {
                            "hostnameType": "ip-name",
                            "enableResourceNameDnsARecord": False,
                            "enableResourceNameDnsAAAARecord": False,
                        },
                    }
                ]
            },
        },
    }


def _ec2_ingress(ctx: _Ctx) -> Json:
    rng = ctx.rng
    group, port = _ec2_id(rng, "sg"), rng.choice((22, 443, 3389, 5432))
    cidr = rng.choice(("0.0.0.0/0", "10.0.0.0/8", f"{_public_ip(rng)}/32"))
    return {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "AuthorizeSecurityGroupIngress",
        "readOnly": False,
        "requestParameters": {
            "groupId": group,
            "ipPermissions": {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": port,
                        "toPort": port,
                        "groups": {},
                        "ipRanges": {"items": [{"cidrIp": cidr, "description": "temp access"}]},
                        "ipv6Ranges": {},
                        "prefixListIds": {},
                    }
                ]
            },
        },
        "responseElements": {
            "requestId": _uuid(rng),
            "_return": True,
            "securityGroupRuleSet": {
                "items": [
                    {
                        "groupOwnerId": ctx.account,
                        "groupId": group,
                        "securityGroupRuleId": _ec2_id(rng, "sgr"),
                        "isEgress": False,
                        "ipProtocol": "tcp",
                        "fromPort": port,
                        "toPort": port,
                        "cidrIpv4": cidr,
                        "description": "temp access",
                    }
                ]
            },
        },
    }


def _ec2_tags(ctx: _Ctx) -> Json:
    rng = ctx.rng
    return {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "CreateTags",
        "readOnly": False,
        "requestParameters": {
            "resourcesSet": {
                "items": [{"resourceId": _ec2_id(rng, rng.choice(("i", "vol", "snap")))}]
            },
            "tagSet": {
                "items": [
                    {"key": "Owner", "value": rng.choice(_USERS)},
                    {"key": "CostCenter", "value": str(rng.randint(1000, 9999))},
                    {"key": "Beschreibung", "value": "Überwachung für Zahlungsdienst"},
                ]
            },
        },
        "responseElements": {"requestId": _uuid(rng), "_return": True},
    }


def _iam(ctx: _Ctx, name: str) -> Json:
    rng = ctx.rng
    user, role = rng.choice(_USERS), rng.choice(_ROLES)
    params: Json | None
    response: Json | None = None
    if name == "CreateUser":
        params = {"userName": f"{user}-{rng.randint(2, 99)}", "tags": []}
        response = {
            "user": {
                "path": "/",
                "userName": params["userName"],
                "userId": _stable_id("AIDA", ctx.account, params["userName"]),
                "arn": f"arn:aws:iam::{ctx.account}:user/{params['userName']}",
                "createDate": _aws_date(ctx.when),
            }
        }
    elif name == "AttachRolePolicy":
        policy = rng.choice(("ReadOnlyAccess", "AdministratorAccess", "AmazonS3FullAccess"))
        params = {"roleName": role, "policyArn": f"arn:aws:iam::aws:policy/{policy}"}
    elif name == "PutRolePolicy":
        params = {
            "roleName": role,
            "policyName": "inline-access",
            "policyDocument": _policy_text(rng, ctx.account, rng.randint(1, 4)),
        }
    elif name == "GetUser":
        params = {"userName": user}
    else:  # ListRoles, ListUsers
        params = {"maxItems": 1000} if rng.random() < 0.5 else None
    return {
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "readOnly": name.startswith(("Get", "List")),
        "global": True,
        "host": "iam.amazonaws.com",
        "requestParameters": params,
        "responseElements": response,
    }


def _sts_assume(ctx: _Ctx) -> Json:
    rng = ctx.rng
    role = rng.choice(_ROLES)
    session = rng.choice(_SESSIONS)
    role_arn = f"arn:aws:iam::{ctx.account}:role/{role}"
    role_id = _stable_id("AROA", ctx.account, role)
    expires = ctx.when + timedelta(hours=1)
    return {
        "eventSource": "sts.amazonaws.com",
        "eventName": "AssumeRole",
        "readOnly": True,
        "requestParameters": {
            "roleArn": role_arn,
            "roleSessionName": session,
            "durationSeconds": 3600,
            **({"externalId": _uuid(rng)} if rng.random() < 0.3 else {}),
        },
        "responseElements": {
            "credentials": {
                "accessKeyId": _key_id(rng, "ASIA"),
                "sessionToken": base64.b64encode(rng.randbytes(rng.randint(300, 700))).decode(),
                "expiration": _aws_date(expires),
            },
            "assumedRoleUser": {
                "assumedRoleId": f"{role_id}:{session}",
                "arn": f"arn:aws:sts::{ctx.account}:assumed-role/{role}/{session}",
            },
        },
        "resources": [{"accountId": ctx.account, "type": "AWS::IAM::Role", "ARN": role_arn}],
    }


def _sts_caller(ctx: _Ctx) -> Json:
    return {
        "eventSource": "sts.amazonaws.com",
        "eventName": "GetCallerIdentity",
        "readOnly": True,
        "requestParameters": None,
        "responseElements": None,
    }


def _kms(ctx: _Ctx, name: str) -> Json:
    rng = ctx.rng
    key_arn = _kms_arn(ctx)
    bucket = rng.choice(_BUCKETS)
    params: Json = {
        "encryptionContext": {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{rng.randint(1, 10**6)}"},
        "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    if name == "GenerateDataKey":
        params = {
            "keyId": key_arn,
            "encryptionContext": params["encryptionContext"],
            "keySpec": "AES_256",
        }
    return {
        "eventSource": "kms.amazonaws.com",
        "eventName": name,
        "readOnly": True,
        "requestParameters": params,
        "responseElements": None,
        "resources": [{"accountId": ctx.account, "type": "AWS::KMS::Key", "ARN": key_arn}],
    }


def _lambda_invoke(ctx: _Ctx) -> Json:
    name = ctx.rng.choice(_FUNCTIONS)
    fn = f"arn:aws:lambda:{ctx.region}:{ctx.account}:function:{name}"
    return {
        "eventSource": "lambda.amazonaws.com",
        "eventName": "Invoke",
        "readOnly": False,
        "eventCategory": "Data",
        "requestParameters": {"functionName": fn, "invocationType": "RequestResponse"},
        "responseElements": None,
        "additionalEventData": {"functionVersion": f"{fn}:$LATEST"},
        "resources": [{"accountId": ctx.account, "type": "AWS::Lambda::Function", "ARN": fn}],
    }


def _lambda_update(ctx: _Ctx) -> Json:
    rng = ctx.rng
    name = rng.choice(_FUNCTIONS)
    fn = f"arn:aws:lambda:{ctx.region}:{ctx.account}:function:{name}"
    return {
        "eventSource": "lambda.amazonaws.com",
        "eventName": "UpdateFunctionCode20150331v2",
        "readOnly": False,
        "requestParameters": {
            "functionName": name,
            "s3Bucket": "acme-artifacts",
            "s3Key": f"builds/{name}/{_hex(rng, 12)}.zip",
            "publish": True,
            "dryRun": False,
        },
        "responseElements": {
            "functionName": name,
            "functionArn": fn,
            "runtime": rng.choice(("python3.12", "nodejs20.x", "java21")),
            "role": f"arn:aws:iam::{ctx.account}:role/lambda-exec-orders",
            "handler": "app.handler",
            "codeSize": rng.randint(10_000, 50_000_000),
            "description": "",
            "timeout": 30,
            "memorySize": 512,
            "lastModified": ctx.when.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "codeSha256": base64.b64encode(rng.randbytes(32)).decode(),
            "version": str(rng.randint(1, 400)),
            "tracingConfig": {"mode": "PassThrough"},
            "revisionId": _uuid(rng),
            "state": "Active",
            "lastUpdateStatus": "InProgress",
            "lastUpdateStatusReason": "The function is being created.",
            "lastUpdateStatusReasonCode": "Creating",
            "packageType": "Zip",
            "architectures": ["arm64"],
            "ephemeralStorage": {"size": 512},
            "snapStart": {"applyOn": "None", "optimizationStatus": "Off"},
            "runtimeVersionConfig": {
                "runtimeVersionArn": f"arn:aws:lambda:{ctx.region}::runtime:{_hex(rng, 64)}"
            },
            "loggingConfig": {"logFormat": "Text", "logGroup": f"/aws/lambda/{name}"},
        },
    }


def _list(source: str, name: str) -> Callable[[_Ctx], Json]:
    def build(ctx: _Ctx) -> Json:
        return {
            "eventSource": source,
            "eventName": name,
            "readOnly": True,
            "requestParameters": None,
            "responseElements": None,
        }

    return build


def _console_login(ctx: _Ctx) -> Json:
    ok = ctx.rng.random() < 0.9
    return {
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "readOnly": False,
        "global": True,
        "canFail": False,
        "eventType": "AwsConsoleSignIn",
        "userAgent": _BROWSER,
        "host": "signin.aws.amazon.com",
        "requestParameters": None,
        "responseElements": {"ConsoleLogin": "Success" if ok else "Failure"},
        "additionalEventData": {
            "LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true"
            f"&state=hashArgsFromTB_us-east-1_{_hex(ctx.rng, 16)}",
            "MobileVersion": "No",
            "MFAIdentifier": f"arn:aws:iam::{ctx.account}:mfa/{ctx.rng.choice(_USERS)}",
            "MFAUsed": ctx.rng.choice(("Yes", "No")),
        },
    }


def _secret(ctx: _Ctx) -> Json:
    name = ctx.rng.choice(("prod/db/orders", "prod/stripe/api", "shared/ldap-bind"))
    arn = f"arn:aws:secretsmanager:{ctx.region}:{ctx.account}:secret:{name}-{_alnum(ctx.rng, 6)}"
    return {
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue",
        "readOnly": True,
        "requestParameters": {"secretId": arn},
        "responseElements": None,
        "resources": [
            {"accountId": ctx.account, "type": "AWS::SecretsManager::Secret", "ARN": arn}
        ],
    }


def _ssm(ctx: _Ctx) -> Json:
    return {
        "eventSource": "ssm.amazonaws.com",
        "eventName": "GetParameter",
        "readOnly": True,
        "requestParameters": {
            "name": ctx.rng.choice(("/prod/orders/db-url", "/shared/feature-flags", "/ami/latest")),
            "withDecryption": ctx.rng.choice((True, False)),
        },
        "responseElements": None,
    }


def _large_policy(ctx: _Ctx) -> Json:
    """The rare ~100 KB record: an inline policy with hundreds of statements."""
    rng = ctx.rng
    # ~570 bytes per statement as an escaped pretty string, ~340 as a JSON object.
    if ctx.region == "us-east-1" and rng.random() < 0.5:  # IAM is logged in us-east-1 only
        return {
            "eventSource": "iam.amazonaws.com",
            "eventName": "PutRolePolicy",
            "readOnly": False,
            "global": True,
            "host": "iam.amazonaws.com",
            "requestParameters": {
                "roleName": rng.choice(_ROLES),
                "policyName": "generated-least-privilege",
                "policyDocument": _policy_text(rng, ctx.account, rng.randint(140, 200)),
            },
            "responseElements": None,
        }
    bucket = rng.choice(_BUCKETS)
    return {
        "eventSource": "s3.amazonaws.com",
        "eventName": "PutBucketPolicy",
        "readOnly": False,
        "host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
        "requestID": _upper(rng, 16),
        "requestParameters": {
            "bucketPolicy": _policy(rng, ctx.account, rng.randint(240, 340)),
            "bucketName": bucket,
            "Host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
            "policy": "",
        },
        "responseElements": None,
        "resources": [
            {"accountId": ctx.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}
        ],
    }


def _policy(rng: random.Random, account: str, statements: int) -> Json:
    actions = ("s3:GetObject", "s3:PutObject", "kms:Decrypt", "dynamodb:Query", "sqs:SendMessage")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": f"Stmt{rng.randint(10**12, 10**13)}",
                "Effect": rng.choice(("Allow", "Allow", "Deny")),
                "Principal": {"AWS": f"arn:aws:iam::{account}:role/{rng.choice(_ROLES)}"},
                "Action": sorted(rng.sample(actions, rng.randint(1, 3))),
                "Resource": [
                    f"arn:aws:s3:::{rng.choice(_BUCKETS)}/tenants/{_uuid(rng)}/*",
                    f"arn:aws:s3:::{rng.choice(_BUCKETS)}",
                ],
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}},
            }
            for _ in range(statements)
        ],
    }


def _policy_text(rng: random.Random, account: str, statements: int) -> str:
    """IAM logs inline policies as a pretty-printed string: escaped newlines inside JSON."""
    return orjson.dumps(_policy(rng, account, statements), option=orjson.OPT_INDENT_2).decode()


_HUMAN: Final = frozenset({"AssumedRole", "IAMUser", "Root"})
_ANY: Final = _HUMAN | {"AWSService"}
_APIS: Final = (
    _Api(14, _ANY, lambda c: _s3_object(c, "GetObject")),
    _Api(6, _ANY, lambda c: _s3_object(c, "PutObject")),
    _Api(3, _HUMAN, lambda c: _s3_bucket(c, "GetBucketAcl")),
    _Api(2, _HUMAN, lambda c: _s3_bucket(c, "GetBucketEncryption")),
    _Api(3, _HUMAN, _list("s3.amazonaws.com", "ListBuckets")),
    _Api(10, _HUMAN, _ec2_describe),
    _Api(2, _HUMAN, _ec2_run),
    _Api(1, _HUMAN, _ec2_ingress),
    _Api(3, _HUMAN, _ec2_tags),
    _Api(2, _HUMAN, _list("ec2.amazonaws.com", "DescribeSecurityGroups")),
    _Api(1, _HUMAN, lambda c: _iam(c, "CreateUser"), global_service=True),
    _Api(1, _HUMAN, lambda c: _iam(c, "AttachRolePolicy"), global_service=True),
    _Api(1, _HUMAN, lambda c: _iam(c, "PutRolePolicy"), global_service=True),
    _Api(4, _HUMAN, lambda c: _iam(c, "GetUser"), global_service=True),
    _Api(4, _HUMAN, lambda c: _iam(c, "ListRoles"), global_service=True),
    _Api(12, _ANY, _sts_assume),
    _Api(5, _HUMAN, _sts_caller),
    _Api(14, _ANY, lambda c: _kms(c, "Decrypt")),
    _Api(5, _ANY, lambda c: _kms(c, "GenerateDataKey")),
    _Api(6, _ANY, _lambda_invoke),
    _Api(1, _HUMAN, _lambda_update),
    _Api(2, _HUMAN, _list("lambda.amazonaws.com", "ListFunctions20150331")),
    _Api(3, frozenset({"IAMUser", "Root"}), _console_login, global_service=True),
    _Api(3, _HUMAN, _secret),
    _Api(4, _ANY, _ssm),
    _Api(1, _HUMAN, _list("cloudtrail.amazonaws.com", "DescribeTrails")),
)


# ---------------------------------------------------------------------------------------
# Files and keys


def log_file(records: list[dict[str, Any]], *, gzipped: bool = True) -> bytes:
    """A log file as CloudTrail writes it: compact `{"Records":[...]}`, gzip level 6."""
    plain = orjson.dumps({"Records": records})
    return _gzip(plain) if gzipped else plain


def object_key(
    *,
    prefix: str,
    org_id: str | None,
    account: str,
    region: str,
    when: datetime,
    rng: random.Random,
) -> str:
    """`[prefix/]AWSLogs/[o-ORGID/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/<name>.json.gz`."""
    when = when.astimezone(UTC)
    name = (
        f"{account}_CloudTrail_{region}_{when.strftime(_KEY_LAYOUT_TIME)}_{_alnum(rng, 16)}.json.gz"
    )
    return _layout(prefix, org_id, account, "CloudTrail", region, when, name)


def digest_key(
    *,
    prefix: str,
    org_id: str | None,
    account: str,
    region: str,
    when: datetime,
    trail_name: str = "org-trail",
) -> str:
    """The digest delivered at `when` (its end time): `.../CloudTrail-Digest/...` layout."""
    when = when.astimezone(UTC)
    name = (
        f"{account}_CloudTrail-Digest_{region}_{trail_name}_{region}_"
        f"{when.strftime(_DIGEST_LAYOUT_TIME)}.json.gz"
    )
    return _layout(prefix, org_id, account, "CloudTrail-Digest", region, when, name)


def digest_file(
    *,
    bucket: str,
    key: str,
    account: str,
    start: datetime,
    end: datetime,
    rng: random.Random,
    logs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = (),
    previous: tuple[str, bytes] | None = None,
    gzipped: bool = True,
) -> bytes:
    """A digest file for the log files delivered between `start` and `end`.

    `logs` are (key, records) of those files; `previous` is the previous digest's key and
    uncompressed content, which the chain of hashes refers to. Hashes are real SHA-256
    values of the uncompressed content; signatures are random hex (nothing verifies them).
    """
    entries = []
    for log_key, records in logs:
        plain = orjson.dumps({"Records": records})
        times = sorted(str(r["eventTime"]) for r in records)
        entries.append(
            {
                "s3Bucket": bucket,
                "s3Object": log_key,
                "hashValue": hashlib.sha256(plain).hexdigest(),
                "hashAlgorithm": "SHA-256",
                "newestEventTime": times[-1] if times else None,
                "oldestEventTime": times[0] if times else None,
            }
        )
    newest = [e["newestEventTime"] for e in entries if e["newestEventTime"]]
    oldest = [e["oldestEventTime"] for e in entries if e["oldestEventTime"]]
    document: Json = {
        "awsAccountId": account,
        "digestStartTime": _iso(start),
        "digestEndTime": _iso(end),
        "digestS3Bucket": bucket,
        "digestS3Object": key,
        "digestPublicKeyFingerprint": _hex(rng, 32),
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": max(newest) if newest else None,
        "oldestEventTime": min(oldest) if oldest else None,
        "previousDigestS3Bucket": bucket if previous else None,
        "previousDigestS3Object": previous[0] if previous else None,
        "previousDigestHashValue": hashlib.sha256(previous[1]).hexdigest() if previous else None,
        "previousDigestHashAlgorithm": "SHA-256" if previous else None,
        "previousDigestSignature": _hex(rng, 512) if previous else None,
        "logFiles": entries,
    }
    plain = orjson.dumps(document)
    return _gzip(plain) if gzipped else plain


def org_trail(
    seed: int,
    *,
    accounts: int = 3,
    regions: int = 2,
    days: int = 2,
    files_per_day: int = 2,
    records_per_file: tuple[int, int] = (1, 200),
    org_id: str | None = "o-a1b2c3d4e5",
    prefix: str = "",
    digests: bool = True,
) -> list[CorpusFile]:
    """An organisation trail's bucket: logs per account, region and day, and their digests.

    Log files are delivered at distinct 5-minute marks of each day (so `files_per_day` is
    at most 288) and hold `records_per_file` records (inclusive bounds; 0 gives
    `{"Records":[]}` files). Digests cover each hour that had a delivery plus one idle hour
    a day, chained per account and region like CloudTrail's. Same seed, same corpus.
    """
    slots = 24 * 60 // _DELIVERY_STEP_MINUTES
    if not 0 <= files_per_day <= slots:
        raise ValueError(f"files_per_day must be between 0 and {slots}, got {files_per_day}")
    if not 1 <= regions <= len(REGIONS):
        raise ValueError(f"regions must be between 1 and {len(REGIONS)}, got {regions}")
    low, high = records_per_file
    if not 0 <= low <= high:
        raise ValueError(
            f"records_per_file must be (low, high) with 0 <= low <= high, got {records_per_file}"
        )
    rng = random.Random(seed)
    account_ids = _account_ids(rng, accounts)
    bucket = (
        f"aws-cloudtrail-logs-{account_ids[0] if account_ids else '000000000000'}-{_hex(rng, 8)}"
    )
    layout: Json = {"prefix": prefix, "org_id": org_id}
    files: list[CorpusFile] = []
    for account in account_ids:
        for region in REGIONS[:regions]:
            delivered: dict[datetime, list[tuple[str, list[Json]]]] = {}
            for day in range(days):
                day_start = START + timedelta(days=day)
                marks = sorted(rng.sample(range(slots), files_per_day))
                for mark in marks:
                    when = day_start + timedelta(minutes=mark * _DELIVERY_STEP_MINUTES)
                    records = [
                        cloudtrail_record(
                            rng,
                            account=account,
                            region=region,
                            when=when - timedelta(seconds=rng.randint(20, 900)),
                        )
                        for _ in range(rng.randint(low, high))
                    ]
                    key = object_key(account=account, region=region, when=when, rng=rng, **layout)
                    event_ids = tuple(str(r["eventID"]) for r in records)
                    files.append(CorpusFile(key, log_file(records), event_ids, "log"))
                    hour = when.replace(minute=0)
                    delivered.setdefault(hour, []).append((key, records))
                idle = day_start + timedelta(hours=rng.randrange(24))
                delivered.setdefault(idle, [])
            if digests:
                files.extend(_digests(rng, bucket, account, region, delivered, layout))
    return files


def _digests(
    rng: random.Random,
    bucket: str,
    account: str,
    region: str,
    delivered: Mapping[datetime, list[tuple[str, list[Json]]]],
    layout: Json,
) -> list[CorpusFile]:
    out: list[CorpusFile] = []
    previous: tuple[str, bytes] | None = None
    for hour in sorted(delivered):
        end = hour + timedelta(hours=1, seconds=rng.randint(0, 59))
        key = digest_key(account=account, region=region, when=end, **layout)
        plain = digest_file(
            bucket=bucket,
            key=key,
            account=account,
            start=end - timedelta(hours=1),
            end=end,
            rng=rng,
            logs=delivered[hour],
            previous=previous,
            gzipped=False,
        )
        out.append(CorpusFile(key, _gzip(plain), (), "digest"))
        previous = (key, plain)
    return out


def write_directory(files: Iterable[CorpusFile], root: Path) -> None:
    """Write each file at its key, relative to `root` (the layout the `file:` source reads)."""
    for f in files:
        relative = PurePosixPath(f.key)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"refusing to write outside {root}: {f.key!r}")
        path = root.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.body)


def _layout(
    prefix: str,
    org_id: str | None,
    account: str,
    folder: str,
    region: str,
    when: datetime,
    name: str,
) -> str:
    parts = [prefix.strip("/")] if prefix.strip("/") else []
    parts.append("AWSLogs")
    if org_id:
        parts.append(org_id)
    parts += [account, folder, region, when.strftime("%Y/%m/%d"), name]
    return "/".join(parts)


# ---------------------------------------------------------------------------------------
# Small helpers (every random choice goes through the rng passed in)


def _gzip(plain: bytes) -> bytes:
    return gzip.compress(plain, compresslevel=_GZIP_LEVEL, mtime=0)


def _weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([name for name, _ in table], weights=[w for _, w in table])[0]


def _account_ids(rng: random.Random, count: int) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[str(rng.randrange(10**11, 10**12))] = None
    return list(seen)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aws_date(when: datetime) -> str:
    """The `Mar 5, 2024, 1:02:03 PM` form IAM and STS use in responseElements."""
    hour = when.hour % 12 or 12
    return f"{when:%b} {when.day}, {when.year}, {hour}:{when:%M:%S %p}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_ALNUM, k=n))


def _upper(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_UPPER_ALNUM, k=n))


def _key_id(rng: random.Random, prefix: str) -> str:
    return prefix + _upper(rng, 16)


@lru_cache(maxsize=4096)
def _stable_id(prefix: str, account: str, name: str) -> str:
    """The same principal always has the same ID, as in AWS (no rng: not a random choice)."""
    digest = hashlib.sha256(f"{account}/{name}".encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:17]


def _ec2_id(rng: random.Random, kind: str) -> str:
    return f"{kind}-{_hex(rng, 17)}"


def _kms_arn(ctx: _Ctx) -> str:
    return f"arn:aws:kms:{ctx.region}:{ctx.account}:key/{_uuid(ctx.rng)}"


def _public_ip(rng: random.Random) -> str:
    first = rng.choice((3, 18, 34, 52, 54, 81, 91, 185, 203))
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


@lru_cache(maxsize=256)
def _kebab(name: str) -> str:
    out = [f"-{c.lower()}" if c.isupper() else c for c in name.rstrip("0123456789v")]
    return "".join(out).lstrip("-")

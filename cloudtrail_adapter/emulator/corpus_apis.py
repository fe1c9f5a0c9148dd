"""The corpus's event templates: one small builder per API and the weighted table of them
(data; the record around them is built in corpus.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from cloudtrail_adapter.emulator import corpus_draw as draw
from cloudtrail_adapter.emulator.corpus_draw import Ctx, Json
from cloudtrail_adapter.emulator.corpus_names import (
    BROWSER,
    BUCKETS,
    FUNCTIONS,
    OBJECT_KEYS,
    ROLES,
    SESSIONS,
    USERS,
)


@dataclass(frozen=True, slots=True)
class Api:
    weight: int
    identities: frozenset[str]
    build: Callable[[Ctx], Json]
    global_service: bool = False  # logged in us-east-1 files only (IAM, sign-in)


def _s3_object(ctx: Ctx, name: str) -> Json:
    rng = ctx.rng
    bucket = rng.choice(BUCKETS)
    key = rng.choice(OBJECT_KEYS).format(n=rng.randint(1, 9999))
    out = rng.randint(0, 50_000_000) if name == "GetObject" else 0
    api: Json = {
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "readOnly": name == "GetObject",
        "eventCategory": "Data",
        "host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
        "requestID": draw.upper(rng, 16),
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
            "x-amz-server-side-encryption-aws-kms-key-id": draw.kms_arn(ctx),
            "x-amz-version-id": draw.alnum(rng, 32),
        }
    return api


def _s3_bucket(ctx: Ctx, name: str) -> Json:
    bucket = ctx.rng.choice(BUCKETS)
    host = f"{bucket}.s3.{ctx.region}.amazonaws.com"
    params: Json = {"bucketName": bucket, "Host": host}
    params.update({"acl": ""} if name == "GetBucketAcl" else {"encryption": ""})
    return {
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "readOnly": True,
        "host": host,
        "requestID": draw.upper(ctx.rng, 16),
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


def _ec2_describe(ctx: Ctx) -> Json:
    rng = ctx.rng
    if rng.random() < 0.5:
        params: Json = {
            "instancesSet": {"items": [{"instanceId": draw.ec2_id(rng, "i")}]},
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


def _ec2_run(ctx: Ctx) -> Json:
    rng = ctx.rng
    instance, image, subnet, vpc = (draw.ec2_id(rng, p) for p in ("i", "ami", "subnet", "vpc"))
    group, eni = draw.ec2_id(rng, "sg"), draw.ec2_id(rng, "eni")
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
            "clientToken": draw.uuid(rng),
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
            "requestId": draw.uuid(rng),
            "reservationId": f"r-{draw.hex_digits(rng, 17)}",
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
                                    "macAddress": ":".join(
                                        draw.hex_digits(rng, 2) for _ in range(6)
                                    ),
                                    "privateIpAddress": ip,
                                    "sourceDestCheck": True,
                                    "interfaceType": "interface",
                                    "groupSet": {"items": [{"groupId": group, "groupName": "web"}]},
                                    "attachment": {
                                        "attachmentId": draw.ec2_id(rng, "eni-attach"),
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


def _ec2_ingress(ctx: Ctx) -> Json:
    rng = ctx.rng
    group, port = draw.ec2_id(rng, "sg"), rng.choice((22, 443, 3389, 5432))
    cidr = rng.choice(("0.0.0.0/0", "10.0.0.0/8", f"{draw.public_ip(rng)}/32"))
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
            "requestId": draw.uuid(rng),
            "_return": True,
            "securityGroupRuleSet": {
                "items": [
                    {
                        "groupOwnerId": ctx.account,
                        "groupId": group,
                        "securityGroupRuleId": draw.ec2_id(rng, "sgr"),
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


def _ec2_tags(ctx: Ctx) -> Json:
    rng = ctx.rng
    return {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "CreateTags",
        "readOnly": False,
        "requestParameters": {
            "resourcesSet": {
                "items": [{"resourceId": draw.ec2_id(rng, rng.choice(("i", "vol", "snap")))}]
            },
            "tagSet": {
                "items": [
                    {"key": "Owner", "value": rng.choice(USERS)},
                    {"key": "CostCenter", "value": str(rng.randint(1000, 9999))},
                    {"key": "Beschreibung", "value": "Überwachung für Zahlungsdienst"},
                ]
            },
        },
        "responseElements": {"requestId": draw.uuid(rng), "_return": True},
    }


def _iam(ctx: Ctx, name: str) -> Json:
    rng = ctx.rng
    user, role = rng.choice(USERS), rng.choice(ROLES)
    params: Json | None
    response: Json | None = None
    if name == "CreateUser":
        params = {"userName": f"{user}-{rng.randint(2, 99)}", "tags": []}
        response = {
            "user": {
                "path": "/",
                "userName": params["userName"],
                "userId": draw.stable_id("AIDA", ctx.account, params["userName"]),
                "arn": f"arn:aws:iam::{ctx.account}:user/{params['userName']}",
                "createDate": draw.aws_date(ctx.when),
            }
        }
    elif name == "AttachRolePolicy":
        policy = rng.choice(("ReadOnlyAccess", "AdministratorAccess", "AmazonS3FullAccess"))
        params = {"roleName": role, "policyArn": f"arn:aws:iam::aws:policy/{policy}"}
    elif name == "PutRolePolicy":
        params = {
            "roleName": role,
            "policyName": "inline-access",
            "policyDocument": draw.policy_text(rng, ctx.account, rng.randint(1, 4)),
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


def _sts_assume(ctx: Ctx) -> Json:
    rng = ctx.rng
    role = rng.choice(ROLES)
    session = rng.choice(SESSIONS)
    role_arn = f"arn:aws:iam::{ctx.account}:role/{role}"
    role_id = draw.stable_id("AROA", ctx.account, role)
    expires = ctx.when + timedelta(hours=1)
    return {
        "eventSource": "sts.amazonaws.com",
        "eventName": "AssumeRole",
        "readOnly": True,
        "requestParameters": {
            "roleArn": role_arn,
            "roleSessionName": session,
            "durationSeconds": 3600,
            **({"externalId": draw.uuid(rng)} if rng.random() < 0.3 else {}),
        },
        "responseElements": {
            "credentials": {
                "accessKeyId": draw.key_id(rng, "ASIA"),
                "sessionToken": base64.b64encode(rng.randbytes(rng.randint(300, 700))).decode(),
                "expiration": draw.aws_date(expires),
            },
            "assumedRoleUser": {
                "assumedRoleId": f"{role_id}:{session}",
                "arn": f"arn:aws:sts::{ctx.account}:assumed-role/{role}/{session}",
            },
        },
        "resources": [{"accountId": ctx.account, "type": "AWS::IAM::Role", "ARN": role_arn}],
    }


def _sts_caller(ctx: Ctx) -> Json:
    return {
        "eventSource": "sts.amazonaws.com",
        "eventName": "GetCallerIdentity",
        "readOnly": True,
        "requestParameters": None,
        "responseElements": None,
    }


def _kms(ctx: Ctx, name: str) -> Json:
    rng = ctx.rng
    key_arn = draw.kms_arn(ctx)
    bucket = rng.choice(BUCKETS)
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


def _lambda_invoke(ctx: Ctx) -> Json:
    name = ctx.rng.choice(FUNCTIONS)
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


def _lambda_update(ctx: Ctx) -> Json:
    rng = ctx.rng
    name = rng.choice(FUNCTIONS)
    fn = f"arn:aws:lambda:{ctx.region}:{ctx.account}:function:{name}"
    return {
        "eventSource": "lambda.amazonaws.com",
        "eventName": "UpdateFunctionCode20150331v2",
        "readOnly": False,
        "requestParameters": {
            "functionName": name,
            "s3Bucket": "acme-artifacts",
            "s3Key": f"builds/{name}/{draw.hex_digits(rng, 12)}.zip",
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
            "revisionId": draw.uuid(rng),
            "state": "Active",
            "lastUpdateStatus": "InProgress",
            "lastUpdateStatusReason": "The function is being created.",
            "lastUpdateStatusReasonCode": "Creating",
            "packageType": "Zip",
            "architectures": ["arm64"],
            "ephemeralStorage": {"size": 512},
            "snapStart": {"applyOn": "None", "optimizationStatus": "Off"},
            "runtimeVersionConfig": {
                "runtimeVersionArn": f"arn:aws:lambda:{ctx.region}::runtime:"
                + draw.hex_digits(rng, 64)
            },
            "loggingConfig": {"logFormat": "Text", "logGroup": f"/aws/lambda/{name}"},
        },
    }


def _list(source: str, name: str) -> Callable[[Ctx], Json]:
    def build(ctx: Ctx) -> Json:
        return {
            "eventSource": source,
            "eventName": name,
            "readOnly": True,
            "requestParameters": None,
            "responseElements": None,
        }

    return build


def _console_login(ctx: Ctx) -> Json:
    ok = ctx.rng.random() < 0.9
    return {
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "readOnly": False,
        "global": True,
        "canFail": False,
        "eventType": "AwsConsoleSignIn",
        "userAgent": BROWSER,
        "host": "signin.aws.amazon.com",
        "requestParameters": None,
        "responseElements": {"ConsoleLogin": "Success" if ok else "Failure"},
        "additionalEventData": {
            "LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true"
            f"&state=hashArgsFromTB_us-east-1_{draw.hex_digits(ctx.rng, 16)}",
            "MobileVersion": "No",
            "MFAIdentifier": f"arn:aws:iam::{ctx.account}:mfa/{ctx.rng.choice(USERS)}",
            "MFAUsed": ctx.rng.choice(("Yes", "No")),
        },
    }


def _secret(ctx: Ctx) -> Json:
    name = ctx.rng.choice(("prod/db/orders", "prod/stripe/api", "shared/ldap-bind"))
    suffix = draw.alnum(ctx.rng, 6)
    arn = f"arn:aws:secretsmanager:{ctx.region}:{ctx.account}:secret:{name}-{suffix}"
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


def _ssm(ctx: Ctx) -> Json:
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


def large_policy(ctx: Ctx) -> Json:
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
                "roleName": rng.choice(ROLES),
                "policyName": "generated-least-privilege",
                "policyDocument": draw.policy_text(rng, ctx.account, rng.randint(140, 200)),
            },
            "responseElements": None,
        }
    bucket = rng.choice(BUCKETS)
    return {
        "eventSource": "s3.amazonaws.com",
        "eventName": "PutBucketPolicy",
        "readOnly": False,
        "host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
        "requestID": draw.upper(rng, 16),
        "requestParameters": {
            "bucketPolicy": draw.policy(rng, ctx.account, rng.randint(240, 340)),
            "bucketName": bucket,
            "Host": f"{bucket}.s3.{ctx.region}.amazonaws.com",
            "policy": "",
        },
        "responseElements": None,
        "resources": [
            {"accountId": ctx.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}
        ],
    }


_HUMAN: Final = frozenset({"AssumedRole", "IAMUser", "Root"})
_ANY: Final = _HUMAN | {"AWSService"}
APIS: Final = (
    Api(14, _ANY, lambda c: _s3_object(c, "GetObject")),
    Api(6, _ANY, lambda c: _s3_object(c, "PutObject")),
    Api(3, _HUMAN, lambda c: _s3_bucket(c, "GetBucketAcl")),
    Api(2, _HUMAN, lambda c: _s3_bucket(c, "GetBucketEncryption")),
    Api(3, _HUMAN, _list("s3.amazonaws.com", "ListBuckets")),
    Api(10, _HUMAN, _ec2_describe),
    Api(2, _HUMAN, _ec2_run),
    Api(1, _HUMAN, _ec2_ingress),
    Api(3, _HUMAN, _ec2_tags),
    Api(2, _HUMAN, _list("ec2.amazonaws.com", "DescribeSecurityGroups")),
    Api(1, _HUMAN, lambda c: _iam(c, "CreateUser"), global_service=True),
    Api(1, _HUMAN, lambda c: _iam(c, "AttachRolePolicy"), global_service=True),
    Api(1, _HUMAN, lambda c: _iam(c, "PutRolePolicy"), global_service=True),
    Api(4, _HUMAN, lambda c: _iam(c, "GetUser"), global_service=True),
    Api(4, _HUMAN, lambda c: _iam(c, "ListRoles"), global_service=True),
    Api(12, _ANY, _sts_assume),
    Api(5, _HUMAN, _sts_caller),
    Api(14, _ANY, lambda c: _kms(c, "Decrypt")),
    Api(5, _ANY, lambda c: _kms(c, "GenerateDataKey")),
    Api(6, _ANY, _lambda_invoke),
    Api(1, _HUMAN, _lambda_update),
    Api(2, _HUMAN, _list("lambda.amazonaws.com", "ListFunctions20150331")),
    Api(3, frozenset({"IAMUser", "Root"}), _console_login, global_service=True),
    Api(3, _HUMAN, _secret),
    Api(4, _ANY, _ssm),
    Api(1, _HUMAN, _list("cloudtrail.amazonaws.com", "DescribeTrails")),
)

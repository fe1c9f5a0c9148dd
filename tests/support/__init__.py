"""What the tests (and `bench/`) share and the runtime package does not ship: the AWS
stand-in (moto, patched where it differs from AWS), the daemon as a child process, SQS
message shapes, config builders and log watchers. The fixtures themselves stay in
tests/conftest.py."""

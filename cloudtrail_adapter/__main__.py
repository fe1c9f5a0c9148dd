"""`python -m cloudtrail_adapter` and the `cloudtrail-adapter` script.

The CLI is imported only when it runs: the worker processes (spawned) re-run the main
script, and must not import the daemon's whole stack (botocore, aiohttp) for nothing.
"""


def entry() -> int:
    from cloudtrail_adapter.cli import main

    return main()


if __name__ == "__main__":
    raise SystemExit(entry())

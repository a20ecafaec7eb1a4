"""An environment that keeps AWS SDKs and HTTP clients on this machine (tests, benchmarks).

Non-loopback HTTP(S) goes to a dead proxy, the AWS SDK never asks the EC2 metadata service,
the spot watcher polls a dead loopback port, and credentials are dummies.
"""

import os

DEAD_PROXY = "http://127.0.0.1:1"


LOOPBACK_ONLY_ENV = {
    "HTTP_PROXY": DEAD_PROXY,
    "HTTPS_PROXY": DEAD_PROXY,
    "http_proxy": DEAD_PROXY,
    "https_proxy": DEAD_PROXY,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "SPOT_BATCH_METADATA_URL": DEAD_PROXY,
}

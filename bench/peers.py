"""The peers of the benchmark: the same parameters read with the ssm-cache library and with the
AWS CLI. Usage: peers.py ENDPOINT_URL BASE_PATH CLI_READS. Prints one JSON object."""
import json
import os
import subprocess
import sys
import time

import boto3
from ssm_cache import SSMParameterGroup

url, base, cli_reads = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = boto3.client("ssm", endpoint_url=url)
calls = {"n": 0}


def count(**_):
    calls["n"] += 1


client.meta.events.register("before-call.ssm.*", count)
SSMParameterGroup.set_ssm_client(client)

start = time.monotonic()
group = SSMParameterGroup(base_path=base, max_age=300)
params = group.parameters("/")
values = [p.value for p in params]
cache_seconds = time.monotonic() - start
cache_calls = calls["n"]

aws = os.path.join(os.path.dirname(sys.executable), "aws")
names = [p.full_name for p in params][:cli_reads]
start = time.monotonic()
for name in names:
    subprocess.run(
        [aws, "ssm", "get-parameter", "--name", name, "--with-decryption", "--endpoint-url", url],
        check=True,
        capture_output=True,
    )
cli_seconds = time.monotonic() - start

print(json.dumps({
    "ssm_cache_params": len(values),
    "ssm_cache_seconds": cache_seconds,
    "ssm_cache_calls": cache_calls,
    "cli_reads": len(names),
    "cli_seconds": cli_seconds,
}))

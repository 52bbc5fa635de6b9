"""The fleet simulation behind scripts/fleet (run that; it builds and sets up first).

N ssmfs daemons mount one tree of P parameters from one moto, through a proxy that counts
each SSM call. The parameters change at a steady rate; each change is made in moto and then
told as AWS would tell it (an EventBridge event, or that event published to an SNS topic).
Each daemon is watched with inotifywait, so the instant each host serves a change is seen
without reading anything (a read would itself refresh).

The timeline is compressed: --max-age 10 s stands for 300 s (30 times). Calls per change do
not depend on the timeline; calls of polling and of safety sweeps scale with it.
"""

import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import boto3

HOSTS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
PARAMS = int(sys.argv[2]) if len(sys.argv) > 2 else 100
MAX_AGE = 10  # seconds, standing for 300
SCALE = 300 / MAX_AGE
CHANGE_EVERY = 2.0  # seconds between changes
CHANGES = 20
EVENTS_MAX_AGE = 60  # the safety sweep in the compressed timeline
DELAY = 8  # --events-delay, seconds
SETTLE = 12  # seconds after the last change before counting stops
BIN = os.environ.get("SSMFS", "target/debug/ssmfs")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards every request to moto and counts SSM calls by X-Amz-Target."""

    daemon_threads = True

    def __init__(self, upstream):
        self.upstream = upstream
        self.counts = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def count(self, target):
        with self.lock:
            self.counts[target] = self.counts.get(target, 0) + 1

    def ssm_calls(self):
        with self.lock:
            return sum(n for t, n in self.counts.items() if t.startswith("AmazonSSM."))

    def by_op(self):
        with self.lock:
            return {t.split(".")[1]: n for t, n in self.counts.items() if t.startswith("AmazonSSM.")}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        try:
            self.forward()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped waiting (it is being stopped)

    def forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        target = self.headers.get("X-Amz-Target", "")
        if target:
            self.server.count(target)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request("POST", self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST


def clients(port):
    kw = dict(
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return {n: boto3.client(n, **kw) for n in ("ssm", "sqs", "sns", "events")}


class Host:
    """One daemon, its mountpoint and its inotify watcher."""

    def __init__(self, i, root, endpoint, args):
        self.i = i
        self.mnt = os.path.join(root, f"h{i}")
        os.makedirs(self.mnt)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                   AWS_REGION="us-east-1",
                   SSMFS_RUNTIME_DIR=os.path.join(root, f"run{i}"))
        self.log = open(os.path.join(root, f"h{i}.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "-f", "/fleet", self.mnt, "--endpoint-url", endpoint, "--max-age", str(MAX_AGE)]
            + args,
            env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.seen = {}
        self.watcher = None

    def wait_mounted(self):
        deadline = time.time() + 60
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"host {self.i} did not mount; see {self.log.name}")
            time.sleep(0.05)

    def read_all(self):
        for name in os.listdir(self.mnt):
            with open(os.path.join(self.mnt, name), "rb") as f:
                f.read()

    def watch(self):
        self.watcher = subprocess.Popen(
            ["inotifywait", "-m", "-e", "close_write", "--format", "%f", self.mnt],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # It says so on standard error once the watch is in place.
        for line in self.watcher.stderr:
            if "Watches established" in line:
                break
        threading.Thread(target=self._read_events, daemon=True).start()

    def _read_events(self):
        for line in self.watcher.stdout:
            name = line.strip()
            self.seen.setdefault(name, []).append(time.monotonic())

    def stop(self):
        if self.watcher:
            self.watcher.kill()
        self.proc.send_signal(signal.SIGTERM)

    def wait(self):
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            subprocess.run(["umount", "-l", self.mnt], check=False)


def event(name):
    return {"operation": "Update", "name": name, "type": "String"}


def run(label, moto_port, mode, delay=0):
    aws = clients(moto_port)
    proxy = Proxy(moto_port)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    root = tempfile.mkdtemp(prefix="ssmfs-fleet-")
    topic = None
    args = []
    if mode == "poll":
        args = ["--poll"]
    elif mode == "sns":
        topic = aws["sns"].create_topic(Name=f"fleet-{label}")["TopicArn"]
    hosts = []
    for i in range(HOSTS):
        host_args = list(args)
        if mode == "eventbridge":
            url = aws["sqs"].create_queue(QueueName=f"fleet-{label}-{i}")["QueueUrl"]
            arn = aws["sqs"].get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            rule = f"fleet-{label}-{i // 5}"  # EventBridge allows five targets a rule
            if i % 5 == 0:
                aws["events"].put_rule(Name=rule, EventPattern=json.dumps({"source": ["aws.ssm"]}))
            aws["events"].put_targets(Rule=rule, Targets=[{"Id": str(i), "Arn": arn}])
            host_args += ["--events-queue", url]
        if mode == "sns":
            host_args += ["--events-topic", topic]
        if mode != "poll":
            host_args += ["--events-max-age", str(EVENTS_MAX_AGE), "--events-delay", str(delay)]
        hosts.append(Host(i, root, endpoint, host_args))
    for h in hosts:
        h.wait_mounted()
    for h in hosts:
        h.read_all()
        h.watch()
    if mode != "poll":
        # Each host says once when its events flow.
        deadline = time.time() + 60
        for h in hosts:
            while "change events flow" not in open(h.log.name).read():
                if time.time() > deadline:
                    raise SystemExit(f"events never flowed on host {h.i}")
                time.sleep(0.1)
    start_calls = proxy.ssm_calls()
    start_ops = proxy.by_op()
    t_start = time.monotonic()
    changes = []
    names = random.sample(range(PARAMS), CHANGES)
    for n, p in enumerate(names):
        name = f"/fleet/p{p:04d}"
        aws["ssm"].put_parameter(Name=name, Value=f"changed-{label}-{n}", Type="String", Overwrite=True)
        told = time.monotonic()
        if mode == "eventbridge":
            aws["events"].put_events(Entries=[{"Source": "aws.ssm", "DetailType": "Parameter Store Change",
                                               "Detail": json.dumps(event(name))}])
        elif mode == "sns":
            aws["sns"].publish(TopicArn=topic, Message=json.dumps(
                {"source": "aws.ssm", "detail-type": "Parameter Store Change", "detail": event(name)}))
        changes.append((f"p{p:04d}", told))
        time.sleep(CHANGE_EVERY)
    time.sleep(SETTLE + delay)
    elapsed = time.monotonic() - t_start
    calls = proxy.ssm_calls() - start_calls
    ops = {k: v - start_ops.get(k, 0) for k, v in proxy.by_op().items()}
    delays, missed = [], 0
    for name, told in changes:
        for h in hosts:
            after = [t for t in h.seen.get(name, []) if t >= told]
            if after:
                delays.append(after[0] - told)
            else:
                missed += 1
    for h in hosts:
        h.stop()
    for h in hosts:
        h.wait()
    proxy.shutdown()
    if mode == "sns":
        left = aws["sqs"].list_queues(QueueNamePrefix="ssmfs-").get("QueueUrls", [])
        assert not left, f"queues left behind: {left}"
    shutil.rmtree(root, ignore_errors=True)
    delays.sort()
    pct = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] if delays else float("nan")
    fetches = ops.get("GetParameter", 0) + ops.get("GetParameters", 0)
    return {
        "run": label,
        "fetches_per_change_per_host": fetches / HOSTS / CHANGES,
        "sweeps_per_host": ops.get("GetParametersByPath", 0) / HOSTS,
        "calls_per_host": calls / HOSTS,
        "per_host_per_min": calls / HOSTS / elapsed * 60,
        "per_change_per_host": calls / HOSTS / CHANGES,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "max": delays[-1] if delays else float("nan"),
        "missed": missed,
        "ops": ops,
        "elapsed": elapsed,
    }


def main():
    moto_port = free_port()
    moto = subprocess.Popen([".venv/bin/moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", moto_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        ssm = clients(moto_port)["ssm"]
        for p in range(PARAMS):
            ssm.put_parameter(Name=f"/fleet/p{p:04d}", Value="initial", Type="String")
        runs = [
            ("polling", "poll", 0),
            ("eventbridge", "eventbridge", 0),
            ("eventbridge-delay", "eventbridge", DELAY),
            ("sns", "sns", 0),
            ("sns-delay", "sns", DELAY),
        ]
        results = []
        for label, mode, delay in runs:
            r = run(label, moto_port, mode, delay)
            results.append(r)
            print(f"{label}: {json.dumps(r)}", file=sys.stderr, flush=True)
        print(f"\n{HOSTS} hosts, {PARAMS} parameters, --max-age {MAX_AGE} s (standing for 300 s), "
              f"{CHANGES} changes {CHANGE_EVERY:g} s apart, --events-max-age {EVENTS_MAX_AGE} s, "
              f"--events-delay {DELAY} s where said\n")
        print("| run | SSM calls per host per minute (compressed) | of them, listing pages per host | "
              "fetches per change per host | change to every host: p50 / p99 / max | changes not seen |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['run']} | {r['per_host_per_min']:.1f} | {r['sweeps_per_host']:.1f} | "
                  f"{r['fetches_per_change_per_host']:.2f} | "
                  f"{r['p50']:.2f} s / {r['p99']:.2f} s / {r['max']:.2f} s | {r['missed']} |")
        # The projection: 10,000 hosts x 1,000 parameters (100 pages), max-age 300 s, one
        # change a minute, default quota 40 calls a second.
        poll = results[0]["per_host_per_min"] / 60 / SCALE * (1000 / PARAMS)
        events = results[1]["fetches_per_change_per_host"]
        print("\nProjected for 10,000 hosts x 1,000 parameters, max-age 300 s, one change a minute:")
        print(f"- polling: {10000 * poll:.0f} calls a second "
              f"(measured {poll * 3600:.0f} calls per host per hour at real time)")
        sweep = 10000 * 100 / 86400
        print(f"- events, no delay: {10000 * events / 60:.0f} calls a second for the changes "
              f"({events:.2f} per change per host) + {sweep:.1f} for daily safety sweeps")
        delayed = results[2]["fetches_per_change_per_host"]
        print(f"- events, --events-delay {DELAY} s with a change every {CHANGE_EVERY:g} s: "
              f"{delayed:.2f} calls per change per host (changes share a call)")
        # With --events-delay 1200, a window lasts 600 s on average and holds about ten changes,
        # which share one call (ten names a call); the next window starts at the next change.
        windows = 10000 * events / (600 + 60)
        print(f"- events, --events-delay 1200: {windows:.1f} calls a second for the changes "
              f"+ {sweep:.1f} for daily safety sweeps = {windows + sweep:.1f}")
    finally:
        moto.send_signal(signal.SIGTERM)
        moto.wait()


if __name__ == "__main__":
    main()

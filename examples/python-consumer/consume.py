#!/usr/bin/env python3
"""Switchyard outside consumer: reads the live event log with its own durable and decodes each event.

Needs only the env file `make run` writes (default .run/demo.env): SWITCHYARD_NATS_URL carries the read-only
`reader` user's credentials, and SWITCHYARD_NATS_INBOX_PREFIX the inbox prefix that user may receive replies
on. The classes come from Proto/ through protoc (see README.md; run.sh generates them).

    python3 consume.py [--env-file .run/demo.env] [--durable my-dashboard] [--subject 'evt.>'] [--count N] [--all]
                       [--idle-timeout SECONDS]

Each event is printed as one JSON line: subject, type, tenant, request id, and the payload's fields.
"""
import argparse
import asyncio
import importlib
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gen"))

from google.protobuf.json_format import MessageToDict  # noqa: E402

import nats  # noqa: E402
from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402

EVENT_TYPE_HEADER = "Switchyard-Event-Type"


def read_env(path):
    values = {}
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.removeprefix("export ").strip()] = value.strip()
    return values


def message_classes():
    """Every message class of the generated switchyard/v1 modules, by protobuf full name."""
    classes = {}
    package = HERE / "gen" / "switchyard" / "v1"
    if not package.is_dir():
        sys.exit(f"no generated classes in {package}: run ./run.sh, or see README.md")
    for module_path in sorted(package.glob("*_pb2.py")):
        module = importlib.import_module(f"switchyard.v1.{module_path.stem}")
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            classes[descriptor.full_name] = getattr(module, descriptor.name)
    return classes


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", default=os.environ.get("SWITCHYARD_ENV_FILE", ".run/demo.env"))
    parser.add_argument("--durable", default="python-example")
    parser.add_argument("--subject", default="evt.>", help="which events (evt.> for all, evt.chat.completed.* …)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events (0: run until Ctrl-C)")
    parser.add_argument("--all", action="store_true", help="start a new durable at the first stored event, not at new ones")
    parser.add_argument("--idle-timeout", type=float, default=0,
                        help="exit with status 2 after this many seconds without an event (0: wait forever)")
    args = parser.parse_args()

    env = read_env(args.env_file)
    url = env.get("SWITCHYARD_NATS_URL")
    if not url:
        sys.exit(f"{args.env_file} has no SWITCHYARD_NATS_URL (run `make run` first)")
    classes = message_classes()
    async def report(error):
        # e.g. a permissions violation: the server says what this user may not do.
        print(f"nats: {error}", file=sys.stderr, flush=True)

    nc = await nats.connect(url, inbox_prefix=env.get("SWITCHYARD_NATS_INBOX_PREFIX", "_INBOX"),
                            name="switchyard-python-example", error_cb=report)
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL if args.all else DeliverPolicy.NEW, ack_wait=30)
    subscription = await js.pull_subscribe(args.subject, durable=args.durable, stream="EVENTS", config=config)
    print(f"consuming {args.subject} with durable {args.durable}", file=sys.stderr, flush=True)
    seen = 0
    last_event = asyncio.get_running_loop().time()
    try:
        while args.count == 0 or seen < args.count:
            try:
                messages = await subscription.fetch(batch=64, timeout=5)
            except nats.errors.TimeoutError:
                idle = asyncio.get_running_loop().time() - last_event
                if args.idle_timeout and idle >= args.idle_timeout:
                    print(f"no event for {idle:.0f} s; giving up", file=sys.stderr, flush=True)
                    sys.exit(2)
                continue
            last_event = asyncio.get_running_loop().time()
            for message in messages:
                event_type = (message.headers or {}).get(EVENT_TYPE_HEADER, "")
                cls = classes.get(event_type)
                if cls is None:
                    print(json.dumps({"subject": message.subject, "type": event_type, "undecoded": True}), flush=True)
                else:
                    event = cls()
                    event.ParseFromString(message.data)
                    body = MessageToDict(event, preserving_proto_field_name=True)
                    meta = body.pop("meta", {})
                    print(json.dumps({"subject": message.subject, "type": event_type,
                                      "tenant": meta.get("tenant_id"), "request_id": meta.get("request_id"),
                                      "event": body}, ensure_ascii=False), flush=True)
                await message.ack()
                seen += 1
                if args.count and seen >= args.count:
                    break
    finally:
        await nc.drain()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

#!/usr/bin/env python3
"""One-off converter: Kafka's JSON message specs -> Sluice's own definition files.

Usage: convert_specs.py [SPEC_DIR] [OUT_DIR]
  SPEC_DIR defaults to ../../../shared/kafka-message-specs relative to this script (or the
  SLUICE_KAFKA_SPECS environment variable); OUT_DIR defaults to ../defs.

The generated files are committed and from then on are the source of truth for the codec;
the JSON files are reference data only and are never copied into the repository. The format
(one `.msg` file per message, indentation for nesting) is described in defs/README.md.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ZooKeeper-era inter-broker APIs: no client sends them and Sluice will never serve them.
SKIPPED = {
    "ControlledShutdownRequest", "ControlledShutdownResponse",
    "LeaderAndIsrRequest", "LeaderAndIsrResponse",
    "StopReplicaRequest", "StopReplicaResponse",
    "UpdateMetadataRequest", "UpdateMetadataResponse",
}


def snake(name):
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"([A-Z])([A-Z][a-z])", r"\1_\2", s)
    return s.lower()


def load(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # The spec files carry // licence comments, which JSON does not allow.
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    return json.loads(text)


def norm_default(field):
    d = field["default"]
    t = field["type"]
    if isinstance(d, bool):
        return "true" if d else "false"
    d = str(d)
    if d == "null":
        return "null"
    if t == "bool":
        return d.lower()
    if t == "string":
        if " " in d or '"' in d:
            raise SystemExit(f"unsupported string default {d!r} in {field['name']}")
        return '""' if d == "" else d
    if d.lower().startswith("0x") or d.lower().startswith("-0x"):
        return str(int(d, 16))
    return d


def field_lines(field, depth):
    pad = "  " * depth
    out = []
    about = field.get("about")
    if about:
        out.append(f"{pad}/// {' '.join(about.split())}")
    parts = [field["name"], field["type"], f"versions={field['versions']}"]
    if "nullableVersions" in field:
        parts.append(f"nullable={field['nullableVersions']}")
    if "tag" in field:
        parts.append(f"tag={field['tag']}")
        parts.append(f"tagged={field['taggedVersions']}")
    if "flexibleVersions" in field:
        parts.append(f"flexible={field['flexibleVersions']}")
    if "default" in field:
        parts.append(f"default={norm_default(field)}")
    if field.get("ignorable"):
        parts.append("ignorable")
    if field.get("mapKey"):
        parts.append("map_key")
    out.append(pad + " ".join(parts))
    for sub in field.get("fields", []):
        out.extend(field_lines(sub, depth + 1))
    return out


def convert(spec, source_name):
    kind = spec["type"]
    head = [kind, spec["name"]]
    if "apiKey" in spec:
        head.append(f"key={spec['apiKey']}")
    head.append(f"versions={spec['validVersions']}")
    head.append(f"flexible={spec['flexibleVersions']}")
    if spec.get("latestVersionUnstable"):
        head.append("unstable_latest")
    lines = [
        f"# {spec['name']}: converted once from Kafka's {source_name} by tools/convert_specs.py.",
        " ".join(head),
    ]
    for f in spec.get("fields", []):
        lines.extend(field_lines(f, 1))
    for c in spec.get("commonStructs", []):
        lines.append(f"common {c['name']} versions={c['versions']}")
        for f in c["fields"]:
            lines.extend(field_lines(f, 1))
    return "\n".join(lines) + "\n"


def main():
    default_specs = os.environ.get(
        "SLUICE_KAFKA_SPECS",
        os.path.join(HERE, "..", "..", "..", "shared", "kafka-message-specs"),
    )
    spec_dir = sys.argv[1] if len(sys.argv) > 1 else default_specs
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "defs")
    os.makedirs(out_dir, exist_ok=True)
    count = 0
    for name in sorted(os.listdir(spec_dir)):
        if not name.endswith(".json"):
            continue
        spec = load(os.path.join(spec_dir, name))
        if spec["name"] in SKIPPED:
            continue
        with open(os.path.join(out_dir, snake(spec["name"]) + ".msg"), "w", encoding="utf-8") as f:
            f.write(convert(spec, name))
        count += 1
    print(f"wrote {count} definitions to {out_dir}")


if __name__ == "__main__":
    main()

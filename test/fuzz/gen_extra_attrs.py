#!/usr/bin/env python3
"""Generated extra_attrs documents for the validator fuzz run (test/t/005_fuzz.pl).

Wrong types, deep nesting, huge arrays and strings, odd numbers, invalid
\\u escapes, truncations and random keys: one base64 document per line,
reproducible from the seed.
"""
import base64
import json
import random
import sys

KEYS = ["scope", "cluster_ids", "platform", "tag", "application", "filtered_query_params",
        "piece_length", "ips", "count", "percentage", "concurrent_task_count",
        "concurrent_peer_count", "timeout", "url", "type", "headers", "username", "password"]
ODD_NUMBERS = ["0", "-0", "1.0", "1e2", "1E+2", "-1", "4294967295", "4294967296",
               "99999999999999999999999999", "1e308", "1e-400", "1e99999", "-1e99999",
               "0.0000001", "12345678901234567890.5", "1" * 1200, "3.14159"]
ESCAPES = ["\\ud800", "\\udc00", "\\ud800\\u0041", "\\u0000", "\\uFFFF", "\\u00e9",
           "\\x41", "\\u12", "\\", "\\q"]


def rand_scalar(r, big=False):
    c = r.randrange(8)
    if c == 0:
        return r.choice(ODD_NUMBERS)
    if c == 1:
        return '"' + r.choice(ESCAPES) + '"'
    if c == 2:
        return json.dumps("x" * (r.choice([1000, 70000]) if big else r.choice([0, 1, 40])))
    if c == 3:
        return r.choice(["true", "false", "null"])
    if c == 4:
        return json.dumps(r.choice(["single_peer", "all_peers", "linux/amd64", "30m", "1h30m",
                                    "-5m", "10.0.0.1", "::1", "nonsense", ""]))
    if c == 5:
        return str(r.randint(-10**12, 10**12))
    if c == 6:
        return json.dumps("é✓" * r.randint(0, 50))
    return '"' + "".join(r.choice('abc\\"/{}[],:') for _ in range(r.randint(0, 20))) + '"'


def rand_value(r, depth=0):
    c = r.randrange(10)
    if c < 5 or depth > 3:
        return rand_scalar(r, big=depth == 0 and r.random() < 0.05)
    if c < 8:
        n = r.choice([1001, 2000]) if r.random() < 0.02 else r.choice([0, 1, 2, 5, 100])
        if n > 5:   # huge arrays hold scalars only, or the output explodes
            return "[" + ",".join(str(r.randint(-5, 5000)) for _ in range(n)) + "]"
        return "[" + ",".join(rand_value(r, depth + 1) for _ in range(n)) + "]"
    return "{" + ",".join(json.dumps(r.choice(KEYS)) + ":" + rand_value(r, depth + 1)
                          for _ in range(r.randint(0, 4))) + "}"


def doc(r):
    c = r.randrange(12)
    if c == 0:      # deep nesting
        d = r.choice([10, 31, 32, 33, 100, 5000])
        return '{"a":' * d + "1" + "}" * d
    if c == 1:      # deep arrays
        d = r.choice([32, 33, 1000])
        return "[" * d + "]" * d
    if c == 2:      # truncated or garbage
        s = rand_value(r)
        return s[: r.randint(0, len(s))]
    if c == 3:
        return rand_scalar(r)
    keys = r.sample(KEYS, r.randint(0, 6))
    if r.random() < 0.2:
        keys.append("".join(r.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(r.randint(1, 30))))
    return "{" + ",".join(json.dumps(k) + ":" + rand_value(r) for k in keys) + "}"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    r = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 20261125)
    out = sys.stdout
    for _ in range(n):
        out.write(base64.b64encode(doc(r).encode()).decode() + "\n")


if __name__ == "__main__":
    main()

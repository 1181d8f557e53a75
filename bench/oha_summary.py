#!/usr/bin/env python3
"""The figures of one oha run (its --output-format json) that the results keep, in microseconds.

Usage: oha_summary.py OHA.json RATE|sat  (prints JSON)
"""

import json
import sys


def main() -> None:
    path, rate = sys.argv[1], sys.argv[2]
    try:
        raw = json.load(open(path))
    except (OSError, ValueError) as e:
        print(json.dumps({"error": f"no oha result in {path}: {e}"}))
        return
    summary = raw.get("summary", {})
    pct = raw.get("latencyPercentiles", {})
    codes = {k: int(v) for k, v in raw.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in raw.get("errorDistribution", {}).items()}
    # Requests still in flight when the run ends are not failures of the server (oha -w waits for
    # them, but an old run may have them).
    cut = errors.pop("aborted due to deadline", 0)
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values()) + sum(errors.values())
    seconds = summary.get("total") or 0.0

    def us(key):
        value = pct.get(key)
        return None if value is None else value * 1e6

    print(
        json.dumps(
            {
                "target_rps": None if rate == "sat" else int(rate),
                "seconds": seconds,
                "requests": total,
                "ok": ok,
                "failed": total - ok,
                "status_codes": codes,
                "aborted_at_deadline": cut,
                "errors": errors,
                "ok_rps": ok / seconds if seconds else 0.0,
                "p50_us": us("p50"),
                "p90_us": us("p90"),
                "p99_us": us("p99"),
                "p999_us": us("p99.9"),
                "max_us": (summary.get("slowest") or 0.0) * 1e6,
            }
        )
    )


if __name__ == "__main__":
    main()

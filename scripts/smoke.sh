#!/usr/bin/env bash
# Smoke test, on a fresh machine: starts the collector with its own private PostgreSQL, seeds 50,000 events,
# asks for the top talkers and the error rate through the HTTP API and through the CLI, compares both with
# what the generator says it sent, prints PASS or FAIL with the differences, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v python3 >/dev/null 2>&1 || { echo "smoke: python3 is needed to compare answers" >&2; exit 1; }
cargo build --quiet -p collector
bin=target/debug/collector
key=smoke-key-0001

work=$(mktemp -d)
chmod 755 "$work" # PostgreSQL runs as its own user when we are root; it must reach its data directory.
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/pg" --api-keys "smoke:$key" >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

url=""
for _ in $(seq 1 600); do
  url=$(sed -n 's/^Collector listening on \(http:[^ ]*\).*/\1/p' "$work/serve.out")
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: the collector exited:"; cat "$work/serve.err"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "FAIL: the collector did not start"; exit 1; }

"$bin" seed --url "$url" --api-key "$key" --count 50000 --seed 7 --bad-ratio 0.01 \
  --start -40m --spread 1800 --expect --expect-json "$work/expect.json"

# Wait until every acknowledged event is committed (the collector's own counter).
valid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["valid_events"])' "$work/expect.json")
for _ in $(seq 1 300); do
  written=$(python3 - "$url" <<'PY'
import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode().splitlines():
    if line.startswith("collector_rows_written_total "):
        print(int(float(line.split()[1])))
PY
)
  [ "${written:-0}" -ge "$valid" ] && break
  sleep 0.2
done

# The same two questions, through the API and through the CLI.
python3 - "$url" "$key" >"$work/api.json" <<'PY'
import json, sys, urllib.request
url, key = sys.argv[1], sys.argv[2]
def get(path):
    req = urllib.request.Request(url + path, headers={"X-API-KEY": key})
    return json.load(urllib.request.urlopen(req))
print(json.dumps({"top": get("/metrics/top-talkers?by=src_ip&limit=10&from=-2h"), "rate": get("/metrics/error-rate?from=-2h")}))
PY
"$bin" query top-talkers --url "$url" --api-key "$key" --by src_ip --limit 10 --from -2h --json >"$work/cli-top.json"
"$bin" query error-rate --url "$url" --api-key "$key" --from -2h --json >"$work/cli-rate.json"
"$bin" query top-talkers --url "$url" --api-key "$key" --by src_ip --limit 5 --from -2h

python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
exp = json.load(open(f"{w}/expect.json"))
api = json.load(open(f"{w}/api.json"))
cli_top, cli_rate = json.load(open(f"{w}/cli-top.json")), json.load(open(f"{w}/cli-rate.json"))
want_top = [[ip, n] for ip, n in exp["top_talkers"]]
problems = []
for via, top, rate in (("API", api["top"], api["rate"]), ("CLI", cli_top, cli_rate)):
    got_top = [[t["src_ip"], t["events"]] for t in top["top"]]
    if got_top != want_top:
        problems.append(f"{via} top talkers differ:\n  sent {want_top}\n  got  {got_top}")
    o = rate["overall"]
    if (o["total"], o["errors"]) != (exp["valid_events"], exp["errors"]):
        problems.append(f"{via} error rate differs: sent {exp['valid_events']} events / {exp['errors']} errors, "
                        f"got {o['total']} / {o['errors']}")
if problems:
    print("FAIL\n" + "\n".join(problems))
    sys.exit(1)
print(f"PASS: top talkers and error rate ({exp['errors']}/{exp['valid_events']} = {exp['error_ratio']:.4f}) "
      "match what was sent, through the API and the CLI")
PY

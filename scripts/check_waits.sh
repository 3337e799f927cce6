#!/usr/bin/env bash
# Every wait in the library, the CLI and the Python extension has a
# deadline that derives from the run's (the balancer's deadline, a command's
# --deadline-ms or --timeout): this greps their sources (src, include,
# tools, python/src) for the forms of a wait that have none -- a condition
# wait without a time, Deadline::max(), a thread join, a CUDA synchronize
# call, a future, a blocking waitpid, a deadline or timeout of a fixed
# number of seconds -- and fails on each one not in scripts/waits_allowed.txt
# (idle worker threads woken by their owner's stop, joins of threads whose
# own waits are bounded, ...; each entry says why). An allow-list entry that
# no longer matches fails too. It first checks itself on a sample that must
# fail. A ctest test (Waits.EveryWaitHasADeadline) runs it.
#
#   bash scripts/check_waits.sh [ROOT]      (default: the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-.}
/usr/bin/python3 - "$root" scripts/waits_allowed.txt <<'PY'
import os, re, sys, tempfile

PATTERNS = [
    (r"\.Wait\(&", "a condition wait without a deadline (CondVar::Wait; use WaitUntil)"),
    (r"\.wait\(", "a std wait without a deadline (condition_variable or future wait)"),
    (r"Deadline::max\(\)", "a wait with no deadline (Deadline::max())"),
    (r"\.join\(\)", "a thread join (it lasts as long as the thread's own waits)"),
    (r"cuda(Stream|Device|Event)Synchronize\(", "a CUDA synchronize with no deadline (use Stream::Synchronize or Event::Wait with one)"),
    (r"std::(future|shared_future|promise|async)\b", "a future (its get and wait have no deadline)"),
    (r"\bwaitpid\(", "a waitpid that may block"),
    (r"DeadlineAfter\(((std::chrono::)?(seconds|milliseconds|minutes)\([0-9]+\)|[0-9]+(ms|s|min))\)",
     "a deadline of a fixed time, not derived from the run's"),
    (r"(Timeout\(|wait_for\([^,]*,)\s*((std::chrono::)?(seconds|milliseconds|minutes)\([0-9]+\)|[0-9]+(ms|s|min)\b)",
     "a timeout of a fixed time, not derived from the run's"),
    (r"(?<![\w.>])(::)?(epoll_wait|accept|recv|recvfrom)\(", "a socket wait (give it a timeout and a deadline)"),
]
DIRS = ["src", "include", "tools", "python/src"]
EXTS = (".cc", ".h", ".cu", ".cpp", ".hpp")

def code_of(line):
    """The line without a // comment (one inside a string literal is kept)."""
    i = line.find("//")
    while i >= 0:
        if line[:i].count('"') % 2 == 0:
            return line[:i]
        i = line.find("//", i + 2)
    return line

def load_allowed(path):
    allowed = []
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        parts = [p.strip() for p in raw.split(" | ")]
        if len(parts) != 3 or not all(parts):
            sys.exit(f"check_waits: {path}:{n}: expected 'path | text on the line | why'")
        allowed.append({"path": parts[0], "text": parts[1], "why": parts[2], "line": n, "used": False})
    return allowed

def scan(root, allowed):
    bad = []
    for d in DIRS:
        top = os.path.join(root, d)
        for dirpath, _, files in os.walk(top):
            for f in sorted(files):
                if not f.endswith(EXTS):
                    continue
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, root)
                for n, line in enumerate(open(full, encoding="utf-8", errors="replace"), 1):
                    code = code_of(line)
                    for pattern, what in PATTERNS:
                        if not re.search(pattern, code):
                            continue
                        ok = False
                        for a in allowed:
                            if a["path"] == rel and a["text"] in line:
                                a["used"] = True
                                ok = True
                        if not ok:
                            bad.append(f"{rel}:{n}: {what}:\n    {line.strip()}")
    return bad

# The check on a sample that must fail: a check that cannot fail proves nothing.
with tempfile.TemporaryDirectory() as sample:
    os.makedirs(os.path.join(sample, "src"))
    with open(os.path.join(sample, "src", "x.cc"), "w") as f:
        f.write("void F() {\n  // cv.Wait(&mu) in a comment is fine\n  while (!ready) cv.Wait(&mu);\n"
                "  copier->Wait(Deadline::max());\n  DeadlineAfter(std::chrono::seconds(60));\n"
                "  cudaStreamSynchronize(s);\n  t.join();\n  cv.wait_for(lock, std::chrono::seconds(10));\n"
                "  ::recv(fd, buf, n, 0);\n  buffer->recv(peer, slot);  // Gloo's, bounded by its own timeout\n}\n")
    found = scan(sample, [])
    if len(found) != 7:
        sys.exit("check_waits: the self-check found %d of the 7 waits in its sample:\n%s" % (len(found), "\n".join(found)))

root, allowed_path = sys.argv[1], sys.argv[2]
allowed = load_allowed(allowed_path)
bad = scan(root, allowed)
stale = [f"{allowed_path}:{a['line']}: '{a['text']}' matches no wait in {a['path']} any more" for a in allowed if not a["used"]]
for b in bad:
    print(b)
for s in stale:
    print(s)
if bad or stale:
    print(f"check_waits: {len(bad)} wait(s) without a deadline, {len(stale)} stale allow-list entr(y/ies); "
          f"give the wait a deadline derived from the run's, or list it in {allowed_path} with the reason it cannot hang")
    sys.exit(1)
print(f"check_waits: every wait has a deadline ({len(allowed)} allowed, each with its reason)")
PY

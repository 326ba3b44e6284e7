import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { e2eSuite, eventually, mountsBelow } from "../compose/cli_harness.js";

/**
 * Build files end to end, as root, through `vessel image build` in a private VESSEL_ROOT:
 * multi-stage builds with --target, ARG before FROM, .dockerignore, the cache's invalidation
 * from a changed COPY source on, HEALTHCHECK run by the monitor, and bad build files that
 * must leave nothing behind. Skips with the reason when the host cannot run containers.
 */

const h = e2eSuite("build-e2e");
const need = h.need;

function context(files: Record<string, string>): string {
  const dir = mkdtempSync(join(h.root, "ctx-"));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

const cachedSteps = (stderr: string): string[] => {
  const lines = stderr.split("\n");
  return lines.flatMap((l, i) => (lines[i + 1] === "--> CACHED" ? [l.replace(/^\[\d\/\d\] /, "")] : []));
};

const MULTI = `ARG BASE=busybox
FROM $BASE AS build
ARG GREETING=hello
COPY src/ /src/
RUN cat /src/*.txt > /out.txt && echo "$GREETING" >> /out.txt
FROM busybox AS unused
RUN exit 3
FROM busybox
COPY --from=build /out.txt /app/
COPY --from=0 /src /app/src
COPY --from=busybox /etc/passwd /app/passwd
COPY . /ctx/
CMD ["cat", "/app/out.txt"]
`;

test("multi-stage build: only needed stages run, COPY --from by name, index and image, --target, build args", async (t) => {
  if (!need(t)) return;
  const ctx = context({
    Dockerfile: MULTI,
    "src/a.txt": "from a\n",
    "src/b.txt": "from b\n",
    "src/skip.log": "ignored\n",
    "secrets/key": "private\n",
    "secrets/public.pem": "public\n",
    ".dockerignore": "secrets\n!secrets/public.pem\n**/*.log\n",
  });
  const r = await h.vessel(["image", "build", "-t", "multi:1", ctx], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /exit 3/, "the unused stage is not built (as BuildKit does)");
  assert.match(r.stderr, /\[1\/2\] STEP 4\/4: RUN cat/);
  assert.equal(await h.ok(["container", "run", "--rm", "multi:1"]), "from a\nfrom b\nhello\n");
  const listing = await h.ok([
    "container",
    "run",
    "--rm",
    "multi:1",
    "sh",
    "-c",
    "ls /app/src; head -1 /app/passwd; find /ctx -type f | sort",
  ]);
  assert.equal(
    listing,
    `a.txt\nb.txt\nroot:x:0:0:root:/root:/bin/sh\n${["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/secrets/public.pem", "/ctx/src/a.txt", "/ctx/src/b.txt"].join("\n")}\n`,
    ".dockerignore keeps secrets/key and *.log out, and the ! exception in",
  );
  const target = await h.vessel([
    "image",
    "build",
    "--target",
    "build",
    "--build-arg",
    "GREETING=hi",
    "-t",
    "multi:build",
    ctx,
  ]);
  assert.equal(target.code, 0, target.stderr);
  assert.doesNotMatch(target.stderr, /COPY --from/, "--target stops at its stage");
  assert.deepEqual(
    cachedSteps(target.stderr),
    ["STEP 3/4: COPY src/ /src/"],
    "a changed build arg re-runs the RUN that sees it",
  );
  assert.equal(
    await h.ok(["container", "run", "--rm", "multi:build", "cat", "/out.txt"]),
    "from a\nfrom b\nhi\n",
  );
});

test("build cache: a changed file re-runs its COPY and what follows; an ignored file changes nothing", async (t) => {
  if (!need(t)) return;
  const ctx = context({
    Dockerfile:
      'FROM busybox\nENV A=1\nCOPY first.txt /\nRUN echo ran > /ran\nCOPY second.txt /\nRUN cat /first.txt /second.txt > /both\nCMD ["cat", "/both"]\n',
    "first.txt": "1\n",
    "second.txt": "2\n",
    "notes.md": "x\n",
    ".dockerignore": "*.md\n",
  });
  await h.ok(["image", "build", "-t", "cache:1", ctx], { timeoutMs: 120_000 });
  const again = await h.vessel(["image", "build", "-t", "cache:1", ctx]);
  assert.equal(cachedSteps(again.stderr).length, 6, again.stderr);
  writeFileSync(join(ctx, "notes.md"), "changed, but ignored\n");
  const ignored = await h.vessel(["image", "build", "-t", "cache:1", ctx]);
  assert.equal(cachedSteps(ignored.stderr).length, 6, "an excluded file is not part of any COPY's hash");
  writeFileSync(join(ctx, "second.txt"), "two\n");
  const changed = await h.vessel(["image", "build", "-t", "cache:2", ctx]);
  assert.equal(changed.code, 0, changed.stderr);
  assert.deepEqual(cachedSteps(changed.stderr), [
    "STEP 2/7: ENV A=1",
    "STEP 3/7: COPY first.txt /",
    "STEP 4/7: RUN echo ran > /ran",
  ]);
  assert.equal(await h.ok(["container", "run", "--rm", "cache:2"]), "1\ntwo\n");
});

test("bad build files: a stage cycle, an unknown --from, an unknown --target name the fault and leave nothing", async (t) => {
  if (!need(t)) return;
  const before = await h.ok(["image", "ls", "-q"]);
  const cases: [string, string[], RegExp][] = [
    [
      "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n",
      [],
      /line 2: the stages form a cycle \(b -> a -> b\)/,
    ],
    [
      "FROM busybox\nRUN echo should-not-run\nCOPY --from=nowhere /x /x\n",
      [],
      /line 3: no stage or image named "nowhere"/,
    ],
    [
      "FROM busybox AS one\nRUN echo should-not-run\n",
      ["--target", "two"],
      /--target two: the build file has no stage named "two" \(its stages: one\)/,
    ],
  ];
  for (const [file, flags, re] of cases) {
    const ctx = context({ Dockerfile: file });
    const r = await h.vessel(["image", "build", ...flags, "-t", "bad:1", ctx]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /STEP/, "no step ran");
  }
  assert.equal(await h.ok(["image", "ls", "-q"]), before, "no image was added");
  assert.deepEqual(mountsBelow(h.root), [], "no overlay left mounted");
  const tmp = join(h.root, "image", "tmp");
  assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], [], "no staging directory left");
});

test("HEALTHCHECK: the monitor runs it; ps and inspect show starting, healthy, unhealthy", async (t) => {
  if (!need(t)) return;
  const ctx = context({
    Dockerfile:
      'FROM busybox\nRUN touch /ok\nHEALTHCHECK --interval=1s --timeout=5s --retries=2 CMD test -e /ok\nCMD ["sleep", "120"]\n',
  });
  await h.ok(["image", "build", "-q", "-t", "health:1", ctx], { timeoutMs: 120_000 });
  const id = (await h.ok(["container", "run", "-d", "--name", "hc", "health:1"])).trim();
  const status = async () =>
    (await h.ok(["container", "ps"])).split("\n").find((l) => l.includes("hc")) ?? "";
  const health = async () =>
    JSON.parse(await h.ok(["container", "inspect", "hc"]))[0].State.Health as {
      Status: string;
      FailingStreak: number;
    };
  assert.match(await status(), /\(health: starting\)|\(healthy\)/);
  await eventually(async () => assert.match(await status(), /Up .*\(healthy\)/));
  assert.equal((await health()).Status, "healthy");
  await h.ok(["container", "exec", "hc", "rm", "/ok"]);
  await eventually(async () => assert.match(await status(), /\(unhealthy\)/));
  const last = await health();
  assert.equal(last.Status, "unhealthy");
  assert.ok(last.FailingStreak >= 2);
  const cfg = JSON.parse(await h.ok(["container", "inspect", "hc"]))[0].Config.Healthcheck;
  assert.deepEqual(cfg, { Test: ["CMD-SHELL", "test -e /ok"], Interval: 1e9, Timeout: 5e9, Retries: 2 });
  await h.ok(["container", "rm", "-f", id]);
});

test("COPY follows symlinks in the context only inside it, never out to the host's files", async (t) => {
  if (!need(t)) return;
  const ctx = context({
    Dockerfile: "FROM busybox\nCOPY data/inner.txt /inner.txt\nCOPY escape/passwd /stolen\n",
    "real/inner.txt": "inside\n",
  });
  symlinkSync("/real", join(ctx, "data")); // absolute: the context's /real, as if it were /
  symlinkSync("/etc", join(ctx, "escape")); // the host's /etc must not be reached
  const r = await h.vessel(["image", "build", "-t", "links:1", ctx]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /STEP 2\/3: COPY data\/inner.txt/);
  assert.match(r.stderr, /COPY source "escape\/passwd" does not exist in the build context/);
  writeFileSync(
    join(ctx, "Dockerfile"),
    'FROM busybox\nCOPY data/inner.txt /inner.txt\nCMD ["cat", "/inner.txt"]\n',
  );
  await h.ok(["image", "build", "-q", "-t", "links:1", ctx]);
  assert.equal(await h.ok(["container", "run", "--rm", "links:1"]), "inside\n");
});

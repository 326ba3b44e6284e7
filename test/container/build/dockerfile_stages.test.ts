import assert from "node:assert/strict";
import { test } from "node:test";
import {
  parseDuration,
  parseStages,
  stageDeps,
  stageOrder,
} from "../../../src/container/build/dockerfile.js";
import { ImageError } from "../../../src/container/image/errors.js";

const TWO_STAGES = `ARG VERSION=1.0
FROM busybox AS build
ARG VERSION
RUN echo $VERSION > /v
FROM busybox
COPY --from=build /v /v
COPY --from=0 /v /v0
`;

test("stages: FROM AS names a stage, COPY --from names it by name or index", () => {
  const f = parseStages(TWO_STAGES);
  assert.equal(f.stages.length, 2);
  assert.equal(f.stages[0]!.name, "build");
  assert.equal(f.stages[1]!.name, undefined);
  assert.deepEqual(stageDeps(f, 1), [
    { image: "busybox", line: 5 },
    { stage: 0, line: 6 },
    { stage: 0, line: 7 },
  ]);
  assert.deepEqual(stageOrder(f), [0, 1]);
  const copy = f.stages[1]!.steps[0]!;
  assert.equal(copy.kind === "COPY" && copy.from, "build");
});

test("stages: a global ARG reaches FROM lines, and a stage only when it declares it again", () => {
  const f = parseStages(
    "ARG BASE=busybox\nARG TAG=latest\nFROM $BASE:$TAG AS a\nLABEL t=[$TAG]\nARG TAG\nLABEL t=[$TAG]\nFROM a\nLABEL t=[$TAG]\n",
  );
  assert.equal(f.stages[0]!.from.image, "busybox:latest");
  assert.deepEqual(
    f.stages.flatMap((s) =>
      s.steps.filter((x) => x.kind === "LABEL").map((x) => x.kind === "LABEL" && x.pairs[0]![1]),
    ),
    ["[]", "[latest]", "[]"],
  );
  // a build arg overrides the global default, and FROM sees it
  assert.equal(
    parseStages("ARG BASE=busybox\nFROM $BASE", new Map([["BASE", "debian"]])).stages[0]!.from.image,
    "debian",
  );
});

test("stages: ENV wins over an ARG of the same name in the stage", () => {
  const f = parseStages("FROM busybox\nENV X=env\nARG X=arg\nWORKDIR /$X\n");
  const wd = f.stages[0]!.steps.at(-1)!;
  assert.equal(wd.kind === "WORKDIR" && wd.value, "/env");
});

test("stages: --target builds only the stages the target needs, dependencies first", () => {
  const f = parseStages(
    "FROM busybox AS base\nFROM busybox AS unused\nRUN false\nFROM base AS tools\nFROM busybox AS app\nCOPY --from=tools / /t\nFROM app AS final\n",
  );
  assert.deepEqual(stageOrder(f), [0, 2, 3, 4]);
  assert.deepEqual(stageOrder(f, "tools"), [0, 2]);
  assert.deepEqual(stageOrder(f, "UNUSED"), [1]);
  assert.throws(
    () => stageOrder(f, "nope"),
    (e: unknown) =>
      e instanceof ImageError &&
      /--target nope: .*no stage named "nope".*base, unused, tools, app, final/.test(e.message),
  );
});

test("stages: a cycle names the line that closes it", () => {
  const f = parseStages("FROM b AS a\nRUN true\nFROM a AS b\n");
  assert.throws(() => stageOrder(f), /build file line 1: the stages form a cycle \(b -> a -> b\)/);
  const g = parseStages("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n");
  assert.throws(() => stageOrder(g), /line 2: the stages form a cycle \(b -> a -> b\)/);
  const self = parseStages("FROM busybox AS me\nCOPY --from=me /x /x\n");
  assert.throws(() => stageOrder(self), /line 2: .*stage "me" uses itself/);
});

test("stages: bad stage references name their line", () => {
  assert.throws(
    () => parseStages("FROM busybox\nCOPY --from=0 /x /x\n"),
    /line 2: COPY --from=0: stage index 0 is not an earlier stage/,
  );
  assert.throws(
    () => parseStages("FROM busybox AS a\nFROM busybox AS A\n"),
    /line 2: stage name "a" is already used by the stage at line 1/,
  );
  assert.throws(() => parseStages("FROM busybox AS 1x\n"), /line 1: bad stage name "1x"/);
  assert.throws(
    () => parseStages("FROM busybox\nADD --from=a /x /x\n"),
    /line 2: ADD: unsupported flag --from=a/,
  );
  assert.throws(() => parseStages("FROM busybox\nCOPY --chmod=rwx a /a\n"), /line 2: COPY --chmod=rwx/);
});

test("HEALTHCHECK: CMD in shell and exec form with options, NONE, and bad forms", () => {
  const f = parseStages(
    'FROM busybox\nHEALTHCHECK --interval=5s --timeout=2s --start-period=1m30s --retries=4 CMD wget -q -O- http://localhost/ || exit 1\nHEALTHCHECK CMD ["true"]\nHEALTHCHECK NONE\n',
  );
  const [a, b, c] = f.stages[0]!.steps;
  assert.deepEqual(a!.kind === "HEALTHCHECK" && a!.health, {
    Test: ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
    Interval: 5e9,
    Timeout: 2e9,
    StartPeriod: 90e9,
    Retries: 4,
  });
  assert.deepEqual(b!.kind === "HEALTHCHECK" && b!.health, { Test: ["CMD", "true"] });
  assert.deepEqual(c!.kind === "HEALTHCHECK" && c!.health, { Test: ["NONE"] });
  assert.throws(
    () => parseStages("FROM busybox\nHEALTHCHECK --interval=soon CMD true"),
    /line 2: HEALTHCHECK --interval=soon: expected a duration/,
  );
  assert.throws(
    () => parseStages("FROM busybox\nHEALTHCHECK --every=1s CMD true"),
    /line 2: HEALTHCHECK: unknown flag --every/,
  );
  assert.throws(
    () => parseStages("FROM busybox\nHEALTHCHECK true"),
    /line 2: expected HEALTHCHECK .* CMD command/,
  );
  assert.throws(() => parseStages("FROM busybox\nHEALTHCHECK NONE x"), /line 2: HEALTHCHECK NONE takes no/);
});

test("durations parse as Go's time.ParseDuration", () => {
  assert.equal(parseDuration("30s"), 30e9);
  assert.equal(parseDuration("1m30s"), 90e9);
  assert.equal(parseDuration("250ms"), 250e6);
  assert.equal(parseDuration("1.5h"), 5400e9);
  assert.equal(parseDuration("0"), 0);
  assert.equal(parseDuration("5"), undefined);
  assert.equal(parseDuration("5s "), undefined);
});

test("FROM --platform: the host's own platform (or $BUILDPLATFORM) is accepted, another is an error naming the line", () => {
  const arch = process.arch === "x64" ? "amd64" : process.arch === "arm64" ? "arm64" : process.arch;
  assert.equal(parseStages(`FROM --platform=linux/${arch} busybox AS a\n`).stages[0]!.name, "a");
  assert.equal(parseStages("FROM --platform=$BUILDPLATFORM busybox\n").stages[0]!.from.image, "busybox");
  assert.throws(
    () => parseStages("FROM --platform=linux/s390x busybox\n"),
    /line 1: FROM --platform=linux\/s390x: only this host's platform/,
  );
});
